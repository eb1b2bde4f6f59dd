package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.ActionCategory;
import codepipeline.jobworker.v1.JobWorker.ActionOwner;
import codepipeline.jobworker.v1.JobWorker.ActionTypeId;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/** The worker's settings, read from the environment (see ../README.md). */
record Settings(
    String name,
    String address,
    Optional<String> token,
    Optional<Path> tlsCa,
    ActionTypeId actionType,
    int slots,
    Duration pollInterval,
    GatewayMode mode,
    boolean artifacts) {

  /** How the worker gets its jobs: GATEWAY_MODE. */
  enum GatewayMode {
    POLL,
    STREAM
  }

  /** A setting that cannot work: the worker exits 1. */
  static final class ConfigException extends Exception {
    private static final long serialVersionUID = 1L;

    ConfigException(String message) {
      super(message);
    }
  }

  static Settings fromEnvironment(Map<String, String> env) throws ConfigException {
    String name = get(env, "WORKER_NAME").orElseGet(() -> "java-" + hostname() + "-" + ProcessHandle.current().pid());
    try {
      return new Settings(
          name,
          get(env, "GATEWAY_ADDRESS").orElse("localhost:50051"),
          get(env, "GATEWAY_TOKEN"),
          tlsCa(env),
          ActionTypeId.newBuilder()
              .setCategory(category(get(env, "ACTION_CATEGORY").orElse("Build")))
              .setOwner(ActionOwner.ACTION_OWNER_CUSTOM)
              .setProvider(get(env, "ACTION_PROVIDER").orElse("DemoBuilder"))
              .setVersion(get(env, "ACTION_VERSION").orElse("1"))
              .build(),
          slots(get(env, "MAX_IN_FLIGHT").orElse("4")),
          pollInterval(get(env, "POLL_INTERVAL").orElse("5")),
          mode(get(env, "GATEWAY_MODE").orElse("stream")),
          artifacts(get(env, "ARTIFACTS").orElse("on")));
    } catch (ConfigException e) {
      throw new ConfigException(name + ": " + e.getMessage());
    }
  }

  /** An unset or empty variable counts as not set. */
  private static Optional<String> get(Map<String, String> env, String key) {
    return Optional.ofNullable(env.get(key)).filter(value -> !value.isEmpty());
  }

  private static Optional<Path> tlsCa(Map<String, String> env) throws ConfigException {
    Optional<Path> path = get(env, "GATEWAY_TLS_CA").map(Path::of);
    if (path.isPresent() && !Files.isReadable(path.get())) {
      throw new ConfigException("GATEWAY_TLS_CA: cannot read " + path.get());
    }
    return path;
  }

  /** `Build`, `BUILD` or `ACTION_CATEGORY_BUILD`. */
  private static ActionCategory category(String value) throws ConfigException {
    String upper = value.toUpperCase(Locale.ROOT);
    String full = upper.startsWith("ACTION_CATEGORY_") ? upper : "ACTION_CATEGORY_" + upper;
    try {
      return ActionCategory.valueOf(full);
    } catch (IllegalArgumentException e) {
      throw new ConfigException("unknown ACTION_CATEGORY \"" + value + "\"");
    }
  }

  private static int slots(String value) throws ConfigException {
    try {
      int slots = Integer.parseInt(value.trim());
      if (slots >= 1) {
        return slots;
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new ConfigException("MAX_IN_FLIGHT must be a positive integer");
  }

  private static Duration pollInterval(String value) throws ConfigException {
    try {
      double seconds = Double.parseDouble(value.trim());
      if (seconds >= 0 && Double.isFinite(seconds)) {
        return Duration.ofNanos((long) (seconds * 1e9));
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new ConfigException("POLL_INTERVAL must be a number of seconds");
  }

  private static GatewayMode mode(String value) throws ConfigException {
    return switch (value) {
      case "poll" -> GatewayMode.POLL;
      case "stream" -> GatewayMode.STREAM;
      default -> throw new ConfigException("GATEWAY_MODE must be poll or stream, not \"" + value + "\"");
    };
  }

  /** ARTIFACTS: `on` reads a job's inputs and writes its outputs; `off` leaves them alone. */
  private static boolean artifacts(String value) throws ConfigException {
    return switch (value.toLowerCase(Locale.ROOT)) {
      case "on" -> true;
      case "off" -> false;
      default -> throw new ConfigException("ARTIFACTS must be on or off, not \"" + value + "\"");
    };
  }

  private static String hostname() {
    try {
      return InetAddress.getLocalHost().getHostName();
    } catch (UnknownHostException e) {
      return "localhost";
    }
  }
}
