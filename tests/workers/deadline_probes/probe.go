// Makes one AcknowledgeJob call through the gateway with grpc-go and a deadline of the given
// milliseconds, and prints how it ended as one JSON line: the code, the ErrorInfo reason and its
// indeterminate flag (empty when the status carries no details: the client library's own
// DEADLINE_EXCEEDED), and the milliseconds it took.
// Usage: probe ADDRESS JOB_ID NONCE TIMEOUT_MS
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	pb "example.com/codepipeline-gateway/gen/jobworkerv1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

func main() {
	address, jobID, nonce := os.Args[1], os.Args[2], os.Args[3]
	timeoutMs, err := strconv.Atoi(os.Args[4])
	if err != nil {
		panic(err)
	}
	conn, err := grpc.Dial(address, grpc.WithInsecure()) // Debian's grpc-go predates credentials/insecure
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := pb.NewJobWorkerServiceClient(conn)
	// Connect first, so the deadline measures the call alone.
	if _, err := client.GetJobDetails(context.Background(), &pb.GetJobDetailsRequest{JobId: jobID}); err != nil {
		fmt.Fprintln(os.Stderr, "warm-up:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeoutMs)*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err = client.AcknowledgeJob(ctx, &pb.AcknowledgeJobRequest{JobId: jobID, Nonce: nonce})
	result := map[string]any{"code": "OK", "reason": "", "indeterminate": "", "elapsed_ms": time.Since(started).Milliseconds()}
	if err != nil {
		s := status.Convert(err)
		result["code"] = s.Code().String()
		for _, detail := range s.Details() {
			if info, ok := detail.(*errdetails.ErrorInfo); ok {
				result["reason"] = info.Reason
				result["indeterminate"] = info.Metadata["indeterminate"]
			}
		}
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}
