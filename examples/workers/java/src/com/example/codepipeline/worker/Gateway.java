package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.ArtifactServiceGrpc;
import codepipeline.jobworker.v1.JobWorker.DownloadInputArtifactRequest;
import codepipeline.jobworker.v1.JobWorker.DownloadInputArtifactResponse;
import codepipeline.jobworker.v1.JobWorker.StreamJobsRequest;
import codepipeline.jobworker.v1.JobWorker.StreamJobsResponse;
import codepipeline.jobworker.v1.JobWorker.UploadOutputArtifactRequest;
import codepipeline.jobworker.v1.JobWorker.UploadOutputArtifactResponse;
import codepipeline.jobworker.v1.JobWorkerServiceGrpc;
import codepipeline.jobworker.v1.JobWorkerServiceGrpc.JobWorkerServiceBlockingStub;
import codepipeline.jobworker.v1.JobWorkerServiceGrpc.JobWorkerServiceStub;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.UnknownFieldSet;
import com.google.rpc.RetryInfo;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientInterceptors;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * The channel to the gateway and its job-worker calls: the unary ones, each retried while the
 * answer is UNAVAILABLE or RESOURCE_EXHAUSTED (after the wait its google.rpc.RetryInfo asks for,
 * else a jittered exponential backoff), and the job stream.
 */
final class Gateway implements AutoCloseable {
  static final Duration CALL_TIMEOUT = Duration.ofSeconds(20);
  /** An artifact's download or upload, however large. */
  static final Duration TRANSFER_TIMEOUT = Duration.ofMinutes(10);
  /** How long a job's call keeps retrying before the job is given up. */
  static final Duration JOB_RETRY_BUDGET = Duration.ofMinutes(2);

  static final Duration FIRST_BACKOFF = Duration.ofMillis(200);
  static final Duration MAX_BACKOFF = Duration.ofSeconds(30);

  /** Worth retrying after a pause: the gateway or CodePipeline is throttling or briefly unreachable. */
  static final Set<Status.Code> RETRYABLE = EnumSet.of(Status.Code.UNAVAILABLE, Status.Code.RESOURCE_EXHAUSTED);

  /** A poll, or the opening of a job stream, failing with these is a configuration problem. */
  static final Set<Status.Code> FATAL =
      EnumSet.of(
          Status.Code.UNAUTHENTICATED,
          Status.Code.PERMISSION_DENIED,
          Status.Code.INVALID_ARGUMENT,
          Status.Code.NOT_FOUND,
          Status.Code.UNIMPLEMENTED);

  private final ManagedChannel channel;
  private final JobWorkerServiceBlockingStub stub;
  private final JobWorkerServiceStub streams;
  private final ArtifactServiceGrpc.ArtifactServiceBlockingStub downloads;
  private final ArtifactServiceGrpc.ArtifactServiceStub uploads;
  private final Log log;

  Gateway(Settings settings, Log log) throws IOException {
    ChannelCredentials credentials =
        settings.tlsCa().isPresent()
            ? TlsChannelCredentials.newBuilder().trustManager(settings.tlsCa().get().toFile()).build()
            : InsecureChannelCredentials.create();
    this.channel = Grpc.newChannelBuilder(settings.address(), credentials).build();
    Channel calls = channel;
    if (settings.token().isPresent()) {
      Metadata headers = new Metadata();
      headers.put(
          Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + settings.token().get());
      calls = ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    this.stub = JobWorkerServiceGrpc.newBlockingStub(calls);
    this.streams = JobWorkerServiceGrpc.newStub(calls);
    this.downloads = ArtifactServiceGrpc.newBlockingStub(calls);
    this.uploads = ArtifactServiceGrpc.newStub(calls);
    this.log = log;
  }

  /**
   * One of a job's calls: retried for up to JOB_RETRY_BUDGET, then its last error is thrown. Not
   * cut short by a stopping worker, so that the jobs in hand are finished.
   */
  <T> T call(String rpc, Function<JobWorkerServiceBlockingStub, T> call) {
    return call(rpc, call, null, Instant.now().plus(JOB_RETRY_BUDGET));
  }

  /**
   * A call retried until it succeeds, fails for good, or the worker stops; stopping also cancels
   * the call in progress (its error is then CANCELLED).
   */
  <T> T callUntilStopped(String rpc, Function<JobWorkerServiceBlockingStub, T> call, Stopping stopping) {
    return call(rpc, call, stopping, Instant.MAX);
  }

  /**
   * One of a job's artifact transfers, each attempt made afresh by `attempt`: retried as a job's
   * calls are.
   */
  <T> T transfer(String rpc, Supplier<T> attempt) {
    return call(rpc, stub -> attempt.get(), null, Instant.now().plus(JOB_RETRY_BUDGET));
  }

  /** A download's answers, as they come: first the metadata, then the bytes. */
  Iterator<DownloadInputArtifactResponse> download(DownloadInputArtifactRequest request) {
    return downloads
        .withDeadlineAfter(TRANSFER_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)
        .downloadInputArtifact(request);
  }

  /** An upload of these messages (the header, then the bytes), waiting for its answer. */
  UploadOutputArtifactResponse upload(UploadOutputArtifactRequest... messages) {
    var answer = new CompletableFuture<UploadOutputArtifactResponse>();
    StreamObserver<UploadOutputArtifactRequest> requests =
        uploads
            .withDeadlineAfter(TRANSFER_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)
            .uploadOutputArtifact(
                new StreamObserver<>() {
                  @Override
                  public void onNext(UploadOutputArtifactResponse response) {
                    answer.complete(response);
                  }

                  @Override
                  public void onError(Throwable error) {
                    answer.completeExceptionally(error);
                  }

                  @Override
                  public void onCompleted() {}
                });
    for (var message : messages) {
      requests.onNext(message);
    }
    requests.onCompleted();
    try {
      return answer.get();
    } catch (ExecutionException e) {
      throw Status.fromThrowable(e.getCause()).asRuntimeException(Status.trailersFromThrowable(e.getCause()));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
    }
  }

  /** Opens a job stream whose answers go to `responses`; returns its sending side. No deadline. */
  StreamObserver<StreamJobsRequest> streamJobs(StreamObserver<StreamJobsResponse> responses) {
    return streams.streamJobs(responses);
  }

  /**
   * `stopping` is null for a job's calls, which the worker's stopping does not cut short. An
   * answer marked indeterminate (it was lost: the call may have taken effect) is repeated too,
   * which is safe; a result (Put*) repeated after one that answers FAILED_PRECONDITION
   * InvalidJobStateException was delivered by the earlier attempt, and the call returns null.
   */
  private <T> T call(
      String rpc, Function<JobWorkerServiceBlockingStub, T> call, Stopping stopping, Instant giveUpAt) {
    Duration backoff = FIRST_BACKOFF;
    boolean uncertain = false; // an earlier attempt may have taken effect
    while (true) {
      StatusRuntimeException error;
      Context previous = stopping == null ? null : stopping.context().attach();
      try {
        return call.apply(stub.withDeadlineAfter(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS));
      } catch (StatusRuntimeException e) {
        error = e;
      } finally {
        if (stopping != null) {
          stopping.context().detach(previous);
        }
      }
      Status.Code code = error.getStatus().getCode();
      Optional<ErrorInfo> info = ErrorInfo.of(StatusProto.fromThrowable(error));
      if (uncertain
          && rpc.startsWith("Put")
          && code == Status.Code.FAILED_PRECONDITION
          && info.map(ErrorInfo::reason).orElse("").equals("InvalidJobStateException")) {
        log.info("%s was delivered by an earlier attempt", rpc);
        return null;
      }
      boolean indeterminate =
          info.map(i -> i.metadata().get("indeterminate")).orElse("").equals("true");
      if (!RETRYABLE.contains(code) && !indeterminate) {
        throw error;
      }
      uncertain = uncertain || indeterminate;
      Duration wait = retryDelay(error).orElse(null);
      if (wait == null) {
        wait = jittered(backoff);
        backoff = doubled(backoff);
      }
      if (Instant.now().plus(wait).isAfter(giveUpAt) || (stopping != null && stopping.isSet())) {
        throw error;
      }
      log.info("%s answered %s; retrying in %d ms", rpc, code, wait.toMillis());
      if (stopping != null ? stopping.await(wait) : sleep(wait)) {
        throw error; // the worker stopped while this call waited
      }
    }
  }

  /** Sleeps for `wait`; true when interrupted. */
  private static boolean sleep(Duration wait) {
    try {
      TimeUnit.NANOSECONDS.sleep(wait.toNanos());
      return false;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return true;
    }
  }

  /** A jittered wait of up to `backoff`. */
  static Duration jittered(Duration backoff) {
    return Duration.ofNanos(ThreadLocalRandom.current().nextLong(backoff.toNanos()));
  }

  /** The backoff after `backoff`: doubled, to at most MAX_BACKOFF. */
  static Duration doubled(Duration backoff) {
    Duration next = backoff.multipliedBy(2);
    return next.compareTo(MAX_BACKOFF) > 0 ? MAX_BACKOFF : next;
  }

  /** The wait a google.rpc.RetryInfo in the status details (grpc-status-details-bin) asks for. */
  static Optional<Duration> retryDelay(StatusRuntimeException error) {
    return retryDelay(StatusProto.fromThrowable(error));
  }

  /** The wait a google.rpc.RetryInfo among a status's details asks for. */
  static Optional<Duration> retryDelay(com.google.rpc.Status status) {
    if (status == null) {
      return Optional.empty();
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.is(RetryInfo.class)) {
        try {
          com.google.protobuf.Duration delay = detail.unpack(RetryInfo.class).getRetryDelay();
          return Optional.of(Duration.ofSeconds(delay.getSeconds(), delay.getNanos()));
        } catch (InvalidProtocolBufferException e) {
          return Optional.empty();
        }
      }
    }
    return Optional.empty();
  }

  /**
   * A google.rpc.ErrorInfo (reason = 1, domain = 2, map<string, string> metadata = 3), read from
   * the wire form: Debian's proto-google-common-protos predates the class.
   */
  record ErrorInfo(String reason, Map<String, String> metadata) {
    static final String TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

    /** The ErrorInfo among a status's details, if there is one. */
    static Optional<ErrorInfo> of(com.google.rpc.Status status) {
      if (status == null) {
        return Optional.empty();
      }
      for (Any detail : status.getDetailsList()) {
        if (detail.getTypeUrl().equals(TYPE_URL)) {
          try {
            return Optional.of(parse(detail.getValue()));
          } catch (InvalidProtocolBufferException e) {
            return Optional.empty();
          }
        }
      }
      return Optional.empty();
    }

    private static ErrorInfo parse(ByteString bytes) throws InvalidProtocolBufferException {
      UnknownFieldSet fields = UnknownFieldSet.parseFrom(bytes);
      Map<String, String> metadata = new HashMap<>();
      for (ByteString entry : fields.getField(3).getLengthDelimitedList()) {
        UnknownFieldSet pair = UnknownFieldSet.parseFrom(entry);
        metadata.put(text(pair, 1), text(pair, 2));
      }
      return new ErrorInfo(text(fields, 1), metadata);
    }

    private static String text(UnknownFieldSet fields, int number) {
      var values = fields.getField(number).getLengthDelimitedList();
      return values.isEmpty() ? "" : values.get(values.size() - 1).toStringUtf8();
    }
  }

  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }
}
