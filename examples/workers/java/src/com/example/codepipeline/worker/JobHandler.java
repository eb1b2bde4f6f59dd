package com.example.codepipeline.worker;

import codepipeline.jobworker.v1.JobWorker.AcknowledgeJobRequest;
import codepipeline.jobworker.v1.JobWorker.Artifact;
import codepipeline.jobworker.v1.JobWorker.ArtifactJob;
import codepipeline.jobworker.v1.JobWorker.DownloadInputArtifactRequest;
import codepipeline.jobworker.v1.JobWorker.DownloadInputArtifactResponse;
import codepipeline.jobworker.v1.JobWorker.ExecutionDetails;
import codepipeline.jobworker.v1.JobWorker.FailureDetails;
import codepipeline.jobworker.v1.JobWorker.FailureType;
import codepipeline.jobworker.v1.JobWorker.GetJobDetailsRequest;
import codepipeline.jobworker.v1.JobWorker.Job;
import codepipeline.jobworker.v1.JobWorker.JobData;
import codepipeline.jobworker.v1.JobWorker.PutJobFailureResultRequest;
import codepipeline.jobworker.v1.JobWorker.PutJobSuccessResultRequest;
import codepipeline.jobworker.v1.JobWorker.UploadOutputArtifactEnd;
import codepipeline.jobworker.v1.JobWorker.UploadOutputArtifactHeader;
import codepipeline.jobworker.v1.JobWorker.UploadOutputArtifactRequest;
import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Works one job, however it arrived: acknowledge (dropping the job when another worker holds it),
 * read its details, do the work its configuration asks for, report the result. With ARTIFACTS=on
 * the work reads every input artifact first, and a job that succeeds writes every output artifact
 * before its result; an artifact the gateway refuses fails the job.
 */
final class JobHandler {
  private final Gateway gateway;
  private final Log log;
  private final String workerName;
  private final boolean artifacts;

  JobHandler(Gateway gateway, Log log, String workerName, boolean artifacts) {
    this.gateway = gateway;
    this.log = log;
    this.workerName = workerName;
    this.artifacts = artifacts;
  }

  /** An artifact transfer the gateway refused (not a pause): the job fails, saying why. */
  static final class ArtifactFailed extends Exception {
    private static final long serialVersionUID = 1L;

    ArtifactFailed(String what, StatusRuntimeException error) {
      super(truncated(what + ": " + error.getStatus().getCode() + " " + description(error)));
    }

    private static String description(StatusRuntimeException error) {
      return Objects.toString(error.getStatus().getDescription(), "");
    }

    private static String truncated(String message) {
      return message.length() > 5000 ? message.substring(0, 5000) : message;
    }
  }

  /** What the work learnt of an input artifact. */
  record InputRead(String name, long size, String sha256) {}

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
    String executionId = workerName + ":" + id;
    String result;
    try {
      result = work(id, data, executionId);
    } catch (ArtifactFailed e) {
      log.info("job %s: %s", id, e.getMessage());
      var failure =
          FailureDetails.newBuilder()
              .setType(FailureType.FAILURE_TYPE_JOB_FAILED)
              .setMessage(e.getMessage())
              .setExternalExecutionId(executionId);
      var request = PutJobFailureResultRequest.newBuilder().setJobId(id).setFailureDetails(failure).build();
      gateway.call("PutJobFailureResult", stub -> stub.putJobFailureResult(request));
      result = "failed";
    }
    log.info("reported %s %s", id, result);
  }

  /** The work the job's configuration asks for, and its result; returns what was reported. */
  private String work(String id, JobData data, String executionId) throws InterruptedException, ArtifactFailed {
    Map<String, String> configuration = data.getActionConfiguration().getConfigurationMap();
    String outcome = configuration.getOrDefault("Outcome", "succeed");
    List<InputRead> inputs = artifacts ? readInputs(id, data) : List.of();

    // The "work": a pause as long as the job asks for.
    Thread.sleep(workMillis(configuration.get("WorkMillis")));

    String result;
    if (outcome.equals("continue") && !data.hasContinuationToken()) {
      // Half done: CodePipeline creates a follow-up job carrying the token, which writes the
      // outputs.
      var request =
          PutJobSuccessResultRequest.newBuilder()
              .setJobId(id)
              .setContinuationToken("continued")
              .setExecutionDetails(execution("first half done", executionId, 50))
              .build();
      gateway.call("PutJobSuccessResult", stub -> stub.putJobSuccessResult(request));
      result = "continued";
    } else if (outcome.equals("succeed") || outcome.equals("continue")) {
      if (artifacts) {
        writeOutputs(id, data, inputs);
      }
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
    return result;
  }

  /**
   * Downloads every input artifact through the gateway, hashing the bytes as they come (nothing is
   * kept); a retry starts a download afresh.
   */
  private List<InputRead> readInputs(String id, JobData data) throws ArtifactFailed {
    var job = ArtifactJob.newBuilder().setJobId(id).build();
    var read = new ArrayList<InputRead>();
    for (Artifact artifact : data.getInputArtifactsList()) {
      String name = artifact.getName();
      var request = DownloadInputArtifactRequest.newBuilder().setJob(job).setArtifactName(name).build();
      InputRead input;
      try {
        input =
            gateway.transfer(
                "DownloadInputArtifact",
                () -> {
                  MessageDigest digest = sha256();
                  long size = 0;
                  for (var answers = gateway.download(request); answers.hasNext(); ) {
                    var answer = answers.next(); // the metadata first, then the bytes
                    if (answer.getResponseCase() == DownloadInputArtifactResponse.ResponseCase.CHUNK) {
                      digest.update(answer.getChunk().asReadOnlyByteBuffer());
                      size += answer.getChunk().size();
                    }
                  }
                  return new InputRead(name, size, HexFormat.of().formatHex(digest.digest()));
                });
      } catch (StatusRuntimeException e) {
        throw refusal("input artifact " + name, e);
      }
      log.info("job %s: read input artifact %s (%d bytes)", id, name, input.size());
      read.add(input);
    }
    return read;
  }

  /**
   * Uploads every output artifact through the gateway: the manifest of the inputs, declared with
   * its size (the gateway stores nothing if the bytes differ).
   */
  private void writeOutputs(String id, JobData data, List<InputRead> inputs) throws ArtifactFailed {
    var job = ArtifactJob.newBuilder().setJobId(id).build();
    for (Artifact artifact : data.getOutputArtifactsList()) {
      String name = artifact.getName();
      byte[] body = manifest(id, name, inputs);
      var header =
          UploadOutputArtifactHeader.newBuilder()
              .setJob(job)
              .setArtifactName(name)
              .setContentType("text/plain")
              .setSizeBytes(body.length);
      var first = UploadOutputArtifactRequest.newBuilder().setHeader(header).build();
      var bytes = UploadOutputArtifactRequest.newBuilder().setChunk(ByteString.copyFrom(body)).build();
      // The end: the gateway stores the object only once it knows every byte came.
      var end =
          UploadOutputArtifactRequest.newBuilder()
              .setEnd(UploadOutputArtifactEnd.getDefaultInstance())
              .build();
      try {
        gateway.transfer("UploadOutputArtifact", () -> gateway.upload(first, bytes, end));
      } catch (StatusRuntimeException e) {
        throw refusal("output artifact " + name, e);
      }
      log.info("job %s: wrote output artifact %s (%d bytes)", id, name, body.length);
    }
  }

  /**
   * What the worker writes to each output artifact: the job, the output's name, and for each input
   * artifact (in the job data's order) its name, size and SHA-256 (hex).
   */
  static byte[] manifest(String jobId, String output, List<InputRead> inputs) {
    var text = new StringBuilder().append("job ").append(jobId).append('\n');
    text.append("output ").append(output).append('\n');
    for (InputRead input : inputs) {
      text.append("input %s %d %s\n".formatted(input.name(), input.size(), input.sha256()));
    }
    return text.toString().getBytes(StandardCharsets.UTF_8);
  }

  /**
   * A failed transfer as an ArtifactFailed to fail the job with; a pause that outlasted the retries
   * is thrown on instead (the job is given up, as for its other calls).
   */
  private static ArtifactFailed refusal(String what, StatusRuntimeException error) {
    if (Gateway.RETRYABLE.contains(error.getStatus().getCode())) {
      throw error;
    }
    return new ArtifactFailed(what, error);
  }

  private static MessageDigest sha256() {
    try {
      return MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every JDK has SHA-256", e);
    }
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
