// Command worker is a CodePipeline custom-action job worker that speaks gRPC to
// codepipeline-gateway.
//
// It polls for jobs with as many free slots as it has, acknowledges each (dropping it when another
// worker holds it), reads its details, does the work its configuration asks for, and reports the
// result. Settings come from the environment; see README.md. SIGTERM stops polling, lets the jobs
// in hand finish, and exits 0.
package main

import (
	"context"
	"fmt"
	"log"
	"math/rand"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "example.com/codepipeline-gateway/gen/jobworkerv1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

const (
	callTimeout    = 20 * time.Second
	jobRetryBudget = 2 * time.Minute // how long a job's call keeps retrying before the job is given up
	firstBackoff   = 200 * time.Millisecond
	maxBackoff     = 30 * time.Second
)

// fatal codes on a poll are configuration problems that waiting does not fix.
var fatal = map[codes.Code]bool{
	codes.Unauthenticated: true, codes.PermissionDenied: true, codes.InvalidArgument: true,
	codes.NotFound: true, codes.Unimplemented: true,
}

// bearer sends the gateway token with every call.
type bearer string

func (t bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false so that a local gateway without TLS works too.
func (bearer) RequireTransportSecurity() bool { return false }

type worker struct {
	name         string
	slots        int
	pollInterval time.Duration
	actionType   *pb.ActionTypeId
	client       pb.JobWorkerServiceClient
}

func env(key, fallback string) string {
	if value := os.Getenv(key); value != "" {
		return value
	}
	return fallback
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetOutput(os.Stdout)
	rand.Seed(time.Now().UnixNano()) // so that workers started together jitter apart

	hostname, _ := os.Hostname()
	name := env("WORKER_NAME", fmt.Sprintf("go-%s-%d", hostname, os.Getpid()))
	slots, err := strconv.Atoi(env("MAX_IN_FLIGHT", "4"))
	if err != nil || slots < 1 {
		log.Fatalf("%s: MAX_IN_FLIGHT must be a positive integer", name)
	}
	pollSeconds, err := strconv.ParseFloat(env("POLL_INTERVAL", "5"), 64)
	if err != nil {
		log.Fatalf("%s: POLL_INTERVAL must be a number of seconds", name)
	}
	category := strings.ToUpper(env("ACTION_CATEGORY", "Build"))
	if !strings.HasPrefix(category, "ACTION_CATEGORY_") {
		category = "ACTION_CATEGORY_" + category
	}
	categoryValue, ok := pb.ActionCategory_value[category]
	if !ok {
		log.Fatalf("%s: unknown ACTION_CATEGORY %q", name, category)
	}

	transport := grpc.WithInsecure()
	if caFile := os.Getenv("GATEWAY_TLS_CA"); caFile != "" {
		tls, err := credentials.NewClientTLSFromFile(caFile, "")
		if err != nil {
			log.Fatalf("%s: GATEWAY_TLS_CA: %v", name, err)
		}
		transport = grpc.WithTransportCredentials(tls)
	}
	options := []grpc.DialOption{transport}
	if token := os.Getenv("GATEWAY_TOKEN"); token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.Dial(env("GATEWAY_ADDRESS", "localhost:50051"), options...)
	if err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	defer conn.Close()

	w := &worker{
		name:         name,
		slots:        slots,
		pollInterval: time.Duration(pollSeconds * float64(time.Second)),
		actionType: &pb.ActionTypeId{
			Category: pb.ActionCategory(categoryValue),
			Owner:    pb.ActionOwner_ACTION_OWNER_CUSTOM,
			Provider: env("ACTION_PROVIDER", "DemoBuilder"),
			Version:  env("ACTION_VERSION", "1"),
		},
		client: pb.NewJobWorkerServiceClient(conn),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := w.run(ctx); err != nil {
		log.Printf("%s: %v", name, err)
		conn.Close()
		os.Exit(1)
	}
}

// run polls until ctx is cancelled, then waits for the jobs in hand.
func (w *worker) run(ctx context.Context) error {
	log.Printf("%s: polling for %s/%s/%s with %d slots",
		w.name, w.actionType.Category, w.actionType.Provider, w.actionType.Version, w.slots)
	busy := make(chan struct{}, w.slots) // one token per job in hand
	var inHand sync.WaitGroup
	defer func() {
		log.Printf("%s: stopping; finishing %d job(s) in hand", w.name, len(busy))
		inHand.Wait()
		log.Printf("%s: stopped", w.name)
	}()

	for ctx.Err() == nil {
		select { // wait for a free slot
		case busy <- struct{}{}:
			<-busy
		case <-ctx.Done():
			return nil
		}
		var jobs []*pb.Job
		err := w.call(ctx, "PollForJobs", true, func(ctx context.Context) error {
			response, err := w.client.PollForJobs(ctx, &pb.PollForJobsRequest{
				ActionTypeId: w.actionType, MaxBatchSize: proto32(int32(w.slots - len(busy))),
			})
			jobs = response.GetJobs()
			return err
		})
		switch {
		case err != nil && ctx.Err() != nil:
			return nil // stopping: the poll was cut short
		case err != nil && fatal[status.Code(err)]:
			return fmt.Errorf("PollForJobs failed: %w", err)
		case err != nil:
			log.Printf("%s: PollForJobs failed: %v; polling again later", w.name, err)
		}
		for _, job := range jobs {
			busy <- struct{}{}
			inHand.Add(1)
			go func(job *pb.Job) {
				defer func() { <-busy; inHand.Done() }()
				if err := w.process(job); err != nil {
					log.Printf("%s: job %s: gave up: %v", w.name, job.GetId(), err)
				}
			}(job)
		}
		if len(jobs) == 0 {
			jitter := 0.5 + rand.Float64()
			select {
			case <-time.After(time.Duration(jitter * float64(w.pollInterval))):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// process runs one job: acknowledge, read details, work, report. Its calls are not cancelled by
// SIGTERM, so that a job in hand is finished.
func (w *worker) process(job *pb.Job) error {
	ctx := context.Background()
	id := job.GetId()
	err := w.call(ctx, "AcknowledgeJob", false, func(ctx context.Context) error {
		_, err := w.client.AcknowledgeJob(ctx, &pb.AcknowledgeJobRequest{JobId: id, Nonce: job.GetNonce()})
		return err
	})
	if status.Code(err) == codes.Aborted {
		log.Printf("%s: job %s is held by another worker; dropped", w.name, id)
		return nil
	} else if err != nil {
		return err
	}
	var details *pb.JobDetails
	err = w.call(ctx, "GetJobDetails", false, func(ctx context.Context) error {
		response, err := w.client.GetJobDetails(ctx, &pb.GetJobDetailsRequest{JobId: id})
		details = response.GetJobDetails()
		return err
	})
	if err != nil {
		return err
	}
	data := details.GetData()
	configuration := data.GetActionConfiguration().GetConfiguration()
	outcome := configuration["Outcome"]
	if outcome == "" {
		outcome = "succeed"
	}
	executionID := w.name + ":" + id

	// The "work": a pause as long as the job asks for.
	workMillis, _ := strconv.Atoi(configuration["WorkMillis"])
	time.Sleep(time.Duration(workMillis) * time.Millisecond)

	var result string
	switch {
	case outcome == "continue" && data.ContinuationToken == nil:
		// Half done: CodePipeline creates a follow-up job carrying the token.
		result = "continued"
		err = w.call(ctx, "PutJobSuccessResult", false, func(ctx context.Context) error {
			_, err := w.client.PutJobSuccessResult(ctx, &pb.PutJobSuccessResultRequest{
				JobId:             id,
				ContinuationToken: protoString("continued"),
				ExecutionDetails: &pb.ExecutionDetails{
					Summary: protoString("first half done"), ExternalExecutionId: &executionID,
					PercentComplete: proto32(50),
				},
			})
			return err
		})
	case outcome == "succeed" || outcome == "continue":
		result = "succeeded"
		err = w.call(ctx, "PutJobSuccessResult", false, func(ctx context.Context) error {
			_, err := w.client.PutJobSuccessResult(ctx, &pb.PutJobSuccessResultRequest{
				JobId: id,
				ExecutionDetails: &pb.ExecutionDetails{
					Summary: protoString("done"), ExternalExecutionId: &executionID,
					PercentComplete: proto32(100),
				},
			})
			return err
		})
	default:
		result = "failed"
		failure := &pb.FailureDetails{
			Type:                pb.FailureType_FAILURE_TYPE_JOB_FAILED,
			Message:             "failed as asked",
			ExternalExecutionId: &executionID,
		}
		if outcome != "fail" {
			failure.Type = pb.FailureType_FAILURE_TYPE_CONFIGURATION_ERROR
			failure.Message = "Outcome=" + outcome + " is not one of succeed, fail, continue"
		}
		err = w.call(ctx, "PutJobFailureResult", false, func(ctx context.Context) error {
			_, err := w.client.PutJobFailureResult(ctx, &pb.PutJobFailureResultRequest{JobId: id, FailureDetails: failure})
			return err
		})
	}
	if err != nil {
		return err
	}
	log.Printf("%s: reported %s %s", w.name, id, result)
	return nil
}

// call runs one RPC, waiting and retrying while the answer is UNAVAILABLE or RESOURCE_EXHAUSTED:
// as long as RetryInfo says, else a jittered exponential backoff. A job's calls give up after
// jobRetryBudget; a poll retries until ctx is cancelled.
func (w *worker) call(ctx context.Context, name string, untilCancelled bool, rpc func(context.Context) error) error {
	backoff := firstBackoff
	giveUpAt := time.Now().Add(jobRetryBudget)
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		err := rpc(callCtx)
		cancel()
		code := status.Code(err)
		if err == nil || (code != codes.Unavailable && code != codes.ResourceExhausted) {
			return err
		}
		wait, ok := retryDelay(err)
		if !ok {
			wait = time.Duration(rand.Int63n(int64(backoff)))
			if backoff *= 2; backoff > maxBackoff {
				backoff = maxBackoff
			}
		}
		if !untilCancelled && time.Now().Add(wait).After(giveUpAt) {
			return err
		}
		log.Printf("%s: %s answered %s; retrying in %d ms", w.name, name, grpcCodeName(code), wait.Milliseconds())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
	}
}

// retryDelay is the wait a google.rpc.RetryInfo in the status details asks for, if any.
func retryDelay(err error) (time.Duration, bool) {
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok {
			delay := info.GetRetryDelay()
			return time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos()), true
		}
	}
	return 0, false
}

// grpcCodeName is a code's name as the gRPC spec writes it (RESOURCE_EXHAUSTED).
func grpcCodeName(code codes.Code) string {
	var name strings.Builder
	for i, r := range code.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			name.WriteByte('_')
		}
		name.WriteRune(r)
	}
	return strings.ToUpper(name.String())
}

func proto32(v int32) *int32       { return &v }
func protoString(v string) *string { return &v }
