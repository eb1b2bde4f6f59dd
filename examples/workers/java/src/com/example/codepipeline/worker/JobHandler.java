package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.AcknowledgeJobRequest;
import codepipeline.jobworker.v1.JobWorker.ExecutionDetails;
import codepipeline.jobworker.v1.JobWorker.FailureDetails;
import codepipeline.jobworker.v1.JobWorker.FailureType;
import codepipeline.jobworker.v1.JobWorker.GetJobDetailsRequest;
import codepipeline.jobworker.v1.JobWorker.Job;
import codepipeline.jobworker.v1.JobWorker.JobData;
import codepipeline.jobworker.v1.JobWorker.PutJobFailureResultRequest;
import codepipeline.jobworker.v1.JobWorker.PutJobSuccessResultRequest;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.Map;

/**
 * Works one job, however it arrived: acknowledge (dropping the job when another worker holds it),
 * read its details, do the work its configuration asks for, report the result.
 */
final class JobHandler {
  private final Gateway gateway;
  private final Log log;
  private final String workerName;

  JobHandler(Gateway gateway, Log log, String workerName) {
    this.gateway = gateway;
    this.log = log;
    this.workerName = workerName;
  }

  /**
   * Works the job, acknowledging it first unless its stream did; logs instead of throwing, so that a
   * failed job never stops the worker.
   */
  void handle(Job job, boolean acknowledged) {
    try {
      if (acknowledged || acknowledge(job)) {
        complete(job);
      }
    } catch (StatusRuntimeException e) {
      log.info("job %s: gave up: %s", job.getId(), e.getStatus());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      log.info("job %s: gave up: interrupted", job.getId());
    } catch (RuntimeException e) {
      log.info("job %s: gave up: %s", job.getId(), e);
    }
  }

  /** AcknowledgeJob with the job's nonce; false when another worker holds the job (ABORTED). */
  private boolean acknowledge(Job job) {
    try {
      var request = AcknowledgeJobRequest.newBuilder().setJobId(job.getId()).setNonce(job.getNonce()).build();
      gateway.call("AcknowledgeJob", stub -> stub.acknowledgeJob(request));
      return true;
    } catch (StatusRuntimeException e) {
      if (e.getStatus().getCode() == Status.Code.ABORTED) {
        log.info("job %s is held by another worker; dropped", job.getId());
        return false;
      }
      throw e;
    }
  }

  /** Everything after the acknowledgement: details, work, result. */
  private void complete(Job job) throws InterruptedException {
    String id = job.getId();
    JobData data =
        gateway
            .call("GetJobDetails", stub -> stub.getJobDetails(GetJobDetailsRequest.newBuilder().setJobId(id).build()))
            .getJobDetails()
            .getData();
    Map<String, String> configuration = data.getActionConfiguration().getConfigurationMap();
    String outcome = configuration.getOrDefault("Outcome", "succeed");
    String executionId = workerName + ":" + id;

    // The "work": a pause as long as the job asks for.
    Thread.sleep(workMillis(configuration.get("WorkMillis")));

    String result;
    if (outcome.equals("continue") && !data.hasContinuationToken()) {
      // Half done: CodePipeline creates a follow-up job carrying the token.
      var request =
          PutJobSuccessResultRequest.newBuilder()
              .setJobId(id)
              .setContinuationToken("continued")
              .setExecutionDetails(execution("first half done", executionId, 50))
              .build();
      gateway.call("PutJobSuccessResult", stub -> stub.putJobSuccessResult(request));
      result = "continued";
    } else if (outcome.equals("succeed") || outcome.equals("continue")) {
      var request =
          PutJobSuccessResultRequest.newBuilder()
              .setJobId(id)
              .setExecutionDetails(execution("done", executionId, 100))
              .build();
      gateway.call("PutJobSuccessResult", stub -> stub.putJobSuccessResult(request));
      result = "succeeded";
    } else {
      var failure =
          outcome.equals("fail")
              ? FailureDetails.newBuilder().setType(FailureType.FAILURE_TYPE_JOB_FAILED).setMessage("failed as asked")
              : FailureDetails.newBuilder()
                  .setType(FailureType.FAILURE_TYPE_CONFIGURATION_ERROR)
                  .setMessage("Outcome=" + outcome + " is not one of succeed, fail, continue");
      var request =
          PutJobFailureResultRequest.newBuilder()
              .setJobId(id)
              .setFailureDetails(failure.setExternalExecutionId(executionId))
              .build();
      gateway.call("PutJobFailureResult", stub -> stub.putJobFailureResult(request));
      result = "failed";
    }
    log.info("reported %s %s", id, result);
  }

  private static ExecutionDetails execution(String summary, String executionId, int percentComplete) {
    return ExecutionDetails.newBuilder()
        .setSummary(summary)
        .setExternalExecutionId(executionId)
        .setPercentComplete(percentComplete)
        .build();
  }

  /** WorkMillis, or no pause when it is missing or not a whole number. */
  private static long workMillis(String value) {
    try {
      return value == null ? 0 : Math.max(0, Long.parseLong(value.trim()));
    } catch (NumberFormatException e) {
      return 0;
    }
  }
}
