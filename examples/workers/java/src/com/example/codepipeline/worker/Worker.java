package com.example.codepipeline.worker;

import java.io.IOException;
import java.time.Duration;
import sun.misc.Signal;

/**
 * A CodePipeline custom-action job worker that speaks gRPC to codepipeline-gateway.
 *
 * <p>Gets jobs for as many free slots as it has, by polling (GATEWAY_MODE=poll) or from the
 * gateway's job feed (GATEWAY_MODE=stream, with credit = free slots); acknowledges each (dropping
 * it when another worker holds it), reads its details, reads its input artifacts and writes its
 * output artifacts through the gateway's ArtifactService (ARTIFACTS=on, the default: no AWS SDK, no
 * S3 credentials), does the work its configuration asks for, and reports the result. Settings
 * come from the environment; see README.md. SIGTERM stops taking jobs, lets the jobs in hand
 * finish, and exits 0.
 */
public final class Worker {
  /**
   * How the worker gets its jobs: polling (PollForJobs) or a job stream (StreamJobs). Both share the
   * gateway, the job pool and the job handler.
   */
  interface Mode {
    /** The line that says the worker is ready (its signal handlers are in place). */
    String describe();

    /** Gets jobs into the pool until the worker stops; false on a configuration error. */
    boolean run(Stopping stopping) throws InterruptedException;
  }

  /** How long the jobs in hand may take once the worker stops (a job's calls retry for 2 minutes). */
  private static final Duration DRAIN_PATIENCE = Duration.ofMinutes(10);

  private Worker() {}

  public static void main(String[] args) throws InterruptedException {
    Settings settings;
    try {
      settings = Settings.fromEnvironment(System.getenv());
    } catch (Settings.ConfigException e) {
      System.out.println(e.getMessage());
      System.exit(1);
      return;
    }
    System.exit(run(settings));
  }

  /**
   * Runs `action` on these signals instead of the JVM's own handling, which would run the shutdown
   * hooks and exit 143 at once. sun.misc.Signal (module jdk.unsupported, kept for uses like this
   * one) is the JDK's only way; javac warns about it.
   */
  private static void onSignals(Runnable action, String... names) {
    for (String name : names) {
      Signal.handle(new Signal(name), signal -> action.run());
    }
  }

  static int run(Settings settings) throws InterruptedException {
    Log log = new Log(settings.name());
    Stopping stopping = new Stopping();
    onSignals(stopping::stop, "TERM", "INT");
    Gateway gateway;
    try {
      gateway = new Gateway(settings, log);
    } catch (IOException | IllegalArgumentException e) { // an unreadable or invalid CA file
      log.info("GATEWAY_TLS_CA: %s", e.getMessage());
      return 1;
    }
    try (gateway) {
      JobPool pool =
          new JobPool(settings.slots(), new JobHandler(gateway, log, settings.name(), settings.artifacts()));
      Mode mode =
          settings.mode() == Settings.GatewayMode.STREAM
              ? new StreamingMode(settings, gateway, pool, log)
              : new PollingMode(settings, gateway, pool, log);
      log.info("%s", mode.describe());
      boolean configured = mode.run(stopping);
      log.info("stopping; finishing %d job(s) in hand", pool.inHand());
      pool.drain(DRAIN_PATIENCE);
      log.info("stopped");
      return configured ? 0 : 1;
    }
  }
}
