package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.Job;
import codepipeline.jobworker.v1.JobWorker.StreamJobsAcknowledge;
import codepipeline.jobworker.v1.JobWorker.StreamJobsAcknowledged;
import codepipeline.jobworker.v1.JobWorker.StreamJobsCredit;
import codepipeline.jobworker.v1.JobWorker.StreamJobsRequest;
import codepipeline.jobworker.v1.JobWorker.StreamJobsResponse;
import codepipeline.jobworker.v1.JobWorker.StreamJobsSubscription;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Gets jobs from the gateway's job feed (StreamJobs) with credit = free slots: acknowledges each
 * delivered job on the stream, works it once acknowledged, and gives its credit back when done.
 * The stream is reopened with backoff whenever it ends.
 */
final class StreamingMode implements Worker.Mode {
  private final Settings settings;
  private final Gateway gateway;
  private final JobPool pool;
  private final Log log;
  /** Acknowledgements sent again after a wait. */
  private final ScheduledExecutorService retries =
      Executors.newSingleThreadScheduledExecutor(
          work -> {
            Thread thread = new Thread(work, "ack-retries");
            thread.setDaemon(true);
            return thread;
          });

  /** The open stream, if any. */
  private Feed feed; // guarded by this

  StreamingMode(Settings settings, Gateway gateway, JobPool pool, Log log) {
    this.settings = settings;
    this.gateway = gateway;
    this.pool = pool;
    this.log = log;
  }

  @Override
  public String describe() {
    var type = settings.actionType();
    return "streaming for %s/%s/%s with %d slots"
        .formatted(type.getCategory(), type.getProvider(), type.getVersion(), settings.slots());
  }

  @Override
  public boolean run(Stopping stopping) throws InterruptedException {
    pool.onSlotFreed(this::grantFreeSlots);
    Duration backoff = Gateway.FIRST_BACKOFF;
    while (!stopping.isSet()) {
      Instant openedAt = Instant.now();
      Feed opened = new Feed();
      synchronized (this) {
        feed = opened;
      }
      StatusRuntimeException ended = opened.awaitEnd(stopping);
      List<String> dropped;
      synchronized (this) {
        feed = null;
        dropped = List.copyOf(opened.unacknowledged.keySet());
        opened.unacknowledged.clear();
      }
      for (String jobId : dropped) {
        log.info("job %s was not acknowledged before its stream ended; dropped", jobId);
      }
      pool.release(dropped.size());
      if (stopping.isSet()) {
        break;
      }
      Status status = ended.getStatus();
      if (Gateway.FATAL.contains(status.getCode())) {
        log.info("StreamJobs failed: %s %s", status.getCode(), status.getDescription());
        return false;
      }
      if (Duration.between(openedAt, Instant.now()).compareTo(Gateway.MAX_BACKOFF) >= 0) {
        backoff = Gateway.FIRST_BACKOFF; // a stream that ran a good while: start afresh
      }
      Duration wait = Gateway.retryDelay(ended).orElse(null);
      if (wait == null) {
        wait = Gateway.jittered(backoff);
        backoff = Gateway.doubled(backoff);
      }
      String description = Objects.toString(status.getDescription(), "");
      log.info("StreamJobs ended: %s %s; reopening in %d ms", status.getCode(), description, wait.toMillis());
      stopping.await(wait);
    }
    return true;
  }

  /** Gives the stream credit for the free slots it holds none for. */
  private synchronized void grantFreeSlots() {
    // Jobs held from an earlier stream free slots that this stream's first credit already counted,
    // so they bring no credit.
    int more = feed == null ? 0 : pool.free() - feed.credit;
    if (more > 0) {
      feed.credit += more;
      feed.send(StreamJobsRequest.newBuilder().setCredit(StreamJobsCredit.newBuilder().setJobs(more)).build());
    }
  }

  /** A delivered job waiting for its acknowledgement, with its retries' backoff. */
  private record Delivery(Job job, Duration backoff, Instant giveUpAt) {}

  private static StreamJobsRequest acknowledge(String jobId) {
    return StreamJobsRequest.newBuilder().setAcknowledge(StreamJobsAcknowledge.newBuilder().setJobId(jobId)).build();
  }

  /**
   * One StreamJobs stream: its sending side, the credit it holds and the jobs delivered on it that
   * are not acknowledged yet (both guarded by the mode), and how it ended.
   */
  private final class Feed implements StreamObserver<StreamJobsResponse> {
    private final CompletableFuture<StatusRuntimeException> ended = new CompletableFuture<>();
    private final StreamObserver<StreamJobsRequest> requests;
    private final Map<String, Delivery> unacknowledged = new HashMap<>();
    private int credit = settings.slots();
    private boolean closed; // guarded by this Feed

    Feed() {
      requests = gateway.streamJobs(this);
      send(
          StreamJobsRequest.newBuilder()
              .setSubscription(
                  StreamJobsSubscription.newBuilder()
                      .setActionTypeId(settings.actionType())
                      .setMaxOutstandingJobs(settings.slots()))
              .build());
    }

    /** Sends a message unless the sending side is closed (StreamObserver is not thread-safe). */
    synchronized void send(StreamJobsRequest request) {
      if (!closed) {
        requests.onNext(request);
      }
    }

    /** Closes the sending side: the gateway delivers no more and ends the stream. */
    synchronized void close() {
      if (!closed) {
        closed = true;
        requests.onCompleted();
      }
    }

    synchronized boolean isClosed() {
      return closed;
    }

    /** Waits for the stream's end, closing it when the worker stops; its status as an exception. */
    StatusRuntimeException awaitEnd(Stopping stopping) throws InterruptedException {
      while (true) {
        try {
          return ended.get(100, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
          if (stopping.isSet()) {
            close();
          }
        } catch (ExecutionException e) {
          throw new IllegalStateException(e); // never completed exceptionally
        }
      }
    }

    @Override
    public void onNext(StreamJobsResponse response) {
      if (response.hasJob()) {
        delivered(response.getJob());
      } else if (response.hasAcknowledged()) {
        acknowledged(response.getAcknowledged());
      }
    }

    @Override
    public void onError(Throwable error) {
      end(Status.fromThrowable(error).asRuntimeException(Status.trailersFromThrowable(error)));
    }

    @Override
    public void onCompleted() {
      end(Status.OK.asRuntimeException());
    }

    private void end(StatusRuntimeException status) {
      synchronized (this) {
        closed = true; // the call is over: nothing more can be sent
      }
      ended.complete(status);
    }

    /**
     * A delivered job uses a slot and one credit, and is acknowledged at once. One delivered again
     * (its lease ended while its acknowledgement waited for a retry) keeps its slot and its waiting
     * acknowledgement, and gets its credit back.
     */
    private void delivered(Job job) {
      synchronized (StreamingMode.this) {
        credit--;
        if (unacknowledged.containsKey(job.getId())) {
          grantFreeSlots();
          return;
        }
        pool.reserveDelivered();
        unacknowledged.put(
            job.getId(), new Delivery(job, Gateway.FIRST_BACKOFF, Instant.now().plus(Gateway.JOB_RETRY_BUDGET)));
      }
      send(acknowledge(job.getId()));
    }

    /** The answer to an acknowledgement: work the job, acknowledge again after a wait, or drop it. */
    private void acknowledged(StreamJobsAcknowledged answer) {
      String jobId = answer.getJobId();
      Delivery delivery;
      synchronized (StreamingMode.this) {
        delivery = unacknowledged.remove(jobId);
      }
      if (delivery == null) {
        return;
      }
      if (!answer.hasError()) {
        pool.startAcknowledged(delivery.job());
        return;
      }
      Status.Code code = Status.fromCodeValue(answer.getError().getCode()).getCode();
      if (Gateway.RETRYABLE.contains(code) && !isClosed()) {
        Duration backoff = delivery.backoff();
        Duration wait = Gateway.retryDelay(answer.getError()).orElse(null);
        if (wait == null) {
          wait = Gateway.jittered(backoff);
          backoff = Gateway.doubled(backoff);
        }
        if (Instant.now().plus(wait).isBefore(delivery.giveUpAt())) {
          log.info("AcknowledgeJob answered %s; retrying in %d ms", code, wait.toMillis());
          synchronized (StreamingMode.this) {
            unacknowledged.put(jobId, new Delivery(delivery.job(), backoff, delivery.giveUpAt()));
          }
          retries.schedule(() -> send(acknowledge(jobId)), wait.toNanos(), TimeUnit.NANOSECONDS);
          return;
        }
      }
      if (code == Status.Code.ABORTED) {
        log.info("job %s is held by another worker; dropped", jobId);
      } else {
        log.info("job %s: gave up: %s %s", jobId, code, answer.getError().getMessage());
      }
      pool.release(1);
    }
  }
}
