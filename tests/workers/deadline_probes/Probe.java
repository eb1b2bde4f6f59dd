// Makes one AcknowledgeJob call through the gateway with grpc-java and a deadline of the given
// milliseconds, and prints how it ended as one JSON line: the code, the ErrorInfo reason and its
// indeterminate flag (empty when the status carries no details: the client library's own
// DEADLINE_EXCEEDED), and the milliseconds it took.
// Usage: java Probe ADDRESS JOB_ID NONCE TIMEOUT_MS

import codepipeline.jobworker.v1.JobWorkerServiceGrpc;
import codepipeline.jobworker.v1.JobWorker.AcknowledgeJobRequest;
import codepipeline.jobworker.v1.JobWorker.GetJobDetailsRequest;
import com.google.protobuf.Any;
import com.google.protobuf.CodedInputStream;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.StatusProto;
import java.util.concurrent.TimeUnit;

public final class Probe {
  /**
   * The reason and the indeterminate metadata of a google.rpc.ErrorInfo, read field by field:
   * Debian's proto-google-common-protos predates the ErrorInfo class.
   */
  static String[] errorInfo(CodedInputStream in) throws java.io.IOException {
    String reason = "";
    String indeterminate = "";
    for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
      if (tag == (1 << 3 | 2)) {
        reason = in.readStringRequireUtf8();
      } else if (tag == (3 << 3 | 2)) {
        CodedInputStream entry = in.readBytes().newCodedInput();
        String key = "";
        String value = "";
        for (int field = entry.readTag(); field != 0; field = entry.readTag()) {
          if (field == (1 << 3 | 2)) {
            key = entry.readStringRequireUtf8();
          } else if (field == (2 << 3 | 2)) {
            value = entry.readStringRequireUtf8();
          } else {
            entry.skipField(field);
          }
        }
        if (key.equals("indeterminate")) {
          indeterminate = value;
        }
      } else {
        in.skipField(tag);
      }
    }
    return new String[] {reason, indeterminate};
  }

  public static void main(String[] args) throws Exception {
    String[] hostPort = args[0].split(":");
    ManagedChannel channel =
        NettyChannelBuilder.forAddress(hostPort[0], Integer.parseInt(hostPort[1])).usePlaintext().build();
    JobWorkerServiceGrpc.JobWorkerServiceBlockingStub stub = JobWorkerServiceGrpc.newBlockingStub(channel);
    // Connect first, so the deadline measures the call alone.
    try {
      stub.getJobDetails(GetJobDetailsRequest.newBuilder().setJobId(args[1]).build());
    } catch (StatusRuntimeException warmUp) {
      System.err.println("warm-up: " + warmUp);
    }
    String code = "OK";
    String reason = "";
    String indeterminate = "";
    long started = System.nanoTime();
    try {
      stub.withDeadlineAfter(Long.parseLong(args[3]), TimeUnit.MILLISECONDS)
          .acknowledgeJob(AcknowledgeJobRequest.newBuilder().setJobId(args[1]).setNonce(args[2]).build());
    } catch (StatusRuntimeException error) {
      code = error.getStatus().getCode().name();
      com.google.rpc.Status details = StatusProto.fromThrowable(error);
      if (details != null) {
        for (Any detail : details.getDetailsList()) {
          if (detail.getTypeUrl().equals("type.googleapis.com/google.rpc.ErrorInfo")) {
            String[] info = errorInfo(detail.getValue().newCodedInput());
            reason = info[0];
            indeterminate = info[1];
          }
        }
      }
    }
    long elapsedMs = (System.nanoTime() - started) / 1_000_000;
    System.out.printf(
        "{\"code\": \"%s\", \"reason\": \"%s\", \"indeterminate\": \"%s\", \"elapsed_ms\": %d}%n",
        code, reason, indeterminate, elapsedMs);
    channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }
}
