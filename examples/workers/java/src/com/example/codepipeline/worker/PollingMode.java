package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.Job;
import codepipeline.jobworker.v1.JobWorker.PollForJobsRequest;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;

/** Gets jobs with PollForJobs, asking for as many as there are free slots. */
final class PollingMode implements Worker.Mode {
  private final Settings settings;
  private final Gateway gateway;
  private final JobPool pool;
  private final Log log;

  PollingMode(Settings settings, Gateway gateway, JobPool pool, Log log) {
    this.settings = settings;
    this.gateway = gateway;
    this.pool = pool;
    this.log = log;
  }

  @Override
  public String describe() {
    var type = settings.actionType();
    return "polling for %s/%s/%s with %d slots"
        .formatted(type.getCategory(), type.getProvider(), type.getVersion(), settings.slots());
  }

  @Override
  public boolean run(Stopping stopping) throws InterruptedException {
    while (!stopping.isSet()) {
      int free = pool.reserveFree(stopping);
      if (free == 0) {
        break;
      }
      var request =
          PollForJobsRequest.newBuilder().setActionTypeId(settings.actionType()).setMaxBatchSize(free).build();
      List<Job> jobs = List.of();
      try {
        jobs = gateway.callUntilStopped("PollForJobs", stub -> stub.pollForJobs(request), stopping).getJobsList();
      } catch (StatusRuntimeException e) {
        pool.release(free); // no jobs came
        free = 0;
        if (stopping.isSet()) {
          break;
        }
        Status status = e.getStatus();
        if (Gateway.FATAL.contains(status.getCode())) {
          log.info("PollForJobs failed: %s %s", status.getCode(), status.getDescription());
          return false;
        }
        log.info("PollForJobs failed: %s; polling again later", status);
      }
      for (Job job : jobs) {
        if (free > 0) {
          free--;
        } else {
          pool.reserveOne(); // more jobs than asked for: the surplus waits for a slot
        }
        pool.start(job);
      }
      pool.release(free);
      if (jobs.isEmpty()) {
        double jitter = 0.5 + ThreadLocalRandom.current().nextDouble();
        stopping.await(Duration.ofNanos((long) (settings.pollInterval().toNanos() * jitter)));
      }
    }
    return true;
  }
}
