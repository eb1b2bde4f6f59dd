// Command worker is a CodePipeline custom-action job worker that speaks gRPC to
// codepipeline-gateway.
//
// It gets jobs for as many free slots as it has, by polling (GATEWAY_MODE=poll) or from the
// gateway's job feed (GATEWAY_MODE=stream, with credit = free slots); acknowledges each (dropping
// it when another worker holds it), reads its details, reads its input artifacts and writes its
// output artifacts through the gateway's ArtifactService (ARTIFACTS=on, the default: no AWS SDK, no
// S3 credentials), does the work its configuration asks for, and reports the result. Settings
// come from the environment; see README.md. SIGTERM stops taking jobs, lets the jobs in hand
// finish, and exits 0.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	callTimeout     = 20 * time.Second
	transferTimeout = 10 * time.Minute // an artifact's download or upload, however large
	jobRetryBudget  = 2 * time.Minute  // how long a job's call keeps retrying before the job is given up
	firstBackoff    = 200 * time.Millisecond
	maxBackoff      = 30 * time.Second
	defaultMode     = "stream"
)

// fatal codes on a poll, or on opening a job stream, are configuration problems that waiting does
// not fix.
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
	artifacts    pb.ArtifactServiceClient
	useArtifacts bool // ARTIFACTS=on: read the inputs, write the outputs

	// Stream mode's bookkeeping.
	mu     sync.Mutex
	inHand int   // jobs from their delivery to their result
	feed   *feed // the open job stream, if any
}

// feed is one StreamJobs stream: the credit it holds, the jobs delivered on it and not yet
// acknowledged (both guarded by the worker's mu), and its sending side, which grpc-go lets one
// goroutine use at a time.
type feed struct {
	stream         pb.JobWorkerService_StreamJobsClient
	credit         int
	unacknowledged map[string]*delivery

	sendMu sync.Mutex
	closed bool
}

// delivery is a delivered job waiting for its acknowledgement, with its retries' backoff.
type delivery struct {
	job      *pb.Job
	backoff  time.Duration
	giveUpAt time.Time
}

// send sends a message on the stream unless its sending side is closed; a failed send shows as
// the stream's end in Recv.
func (f *feed) send(request *pb.StreamJobsRequest) {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if !f.closed {
		_ = f.stream.Send(request)
	}
}

// close closes the sending side: the gateway delivers no more and ends the stream.
func (f *feed) close() {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if !f.closed {
		f.closed = true
		_ = f.stream.CloseSend()
	}
}

func (f *feed) isClosed() bool {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	return f.closed
}

func acknowledge(id string) *pb.StreamJobsRequest {
	ack := &pb.StreamJobsAcknowledge{JobId: id}
	return &pb.StreamJobsRequest{Request: &pb.StreamJobsRequest_Acknowledge{Acknowledge: ack}}
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
	mode := env("GATEWAY_MODE", defaultMode)
	if mode != "poll" && mode != "stream" {
		log.Fatalf("%s: GATEWAY_MODE must be poll or stream, not %q", name, mode)
	}
	artifacts := strings.ToLower(env("ARTIFACTS", "on"))
	if artifacts != "on" && artifacts != "off" {
		log.Fatalf("%s: ARTIFACTS must be on or off, not %q", name, artifacts)
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
		client:       pb.NewJobWorkerServiceClient(conn),
		artifacts:    pb.NewArtifactServiceClient(conn),
		useArtifacts: artifacts == "on",
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	run := w.poll
	if mode == "stream" {
		run = w.stream
	}
	if err := run(ctx); err != nil {
		log.Printf("%s: %v", name, err)
		conn.Close()
		os.Exit(1)
	}
}

// poll polls until ctx is cancelled, then waits for the jobs in hand.
func (w *worker) poll(ctx context.Context) error {
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

// stream takes jobs from a StreamJobs stream with credit = free slots, reopened with backoff
// whenever it ends, until ctx is cancelled; then it waits for the jobs in hand.
func (w *worker) stream(ctx context.Context) error {
	log.Printf("%s: streaming for %s/%s/%s with %d slots",
		w.name, w.actionType.Category, w.actionType.Provider, w.actionType.Version, w.slots)
	var inHand sync.WaitGroup
	working := make(chan struct{}, w.slots) // one token per job being worked on
	start := func(job *pb.Job) {
		inHand.Add(1)
		go func() {
			defer inHand.Done()
			defer w.finished()
			working <- struct{}{} // after a reopen, jobs held from the last stream may fill the slots
			defer func() { <-working }()
			if err := w.complete(job); err != nil {
				log.Printf("%s: job %s: gave up: %v", w.name, job.GetId(), err)
			}
		}()
	}
	defer func() {
		w.mu.Lock()
		log.Printf("%s: stopping; finishing %d job(s) in hand", w.name, w.inHand)
		w.mu.Unlock()
		inHand.Wait()
		log.Printf("%s: stopped", w.name)
	}()

	backoff := firstBackoff
	for ctx.Err() == nil {
		openedAt := time.Now()
		err := w.streamOnce(ctx, start)
		if ctx.Err() != nil {
			return nil
		}
		if fatal[status.Code(err)] {
			return fmt.Errorf("StreamJobs failed: %w", err)
		}
		if time.Since(openedAt) >= maxBackoff {
			backoff = firstBackoff // a stream that ran a good while: start afresh
		}
		ended := status.Convert(err)
		wait, ok := retryDelay(ended)
		if !ok {
			wait, backoff = backoffStep(backoff)
		}
		log.Printf("%s: StreamJobs ended: %s %s; reopening in %d ms",
			w.name, grpcCodeName(ended.Code()), ended.Message(), wait.Milliseconds())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	return nil
}

// streamOnce opens a stream and serves it until it ends; cancelling ctx closes its sending side.
// Jobs delivered on it and not acknowledged by its end are dropped.
func (w *worker) streamOnce(ctx context.Context, start func(*pb.Job)) error {
	streamCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := w.client.StreamJobs(streamCtx)
	if err != nil {
		return err
	}
	f := &feed{stream: stream, credit: w.slots, unacknowledged: map[string]*delivery{}}
	f.send(&pb.StreamJobsRequest{Request: &pb.StreamJobsRequest_Subscription{Subscription: &pb.StreamJobsSubscription{
		ActionTypeId: w.actionType, MaxOutstandingJobs: int32(w.slots),
	}}})
	w.mu.Lock()
	w.feed = f
	w.mu.Unlock()
	ended := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			f.close()
		case <-ended:
		}
	}()
	defer func() {
		close(ended)
		f.close()
		w.mu.Lock()
		defer w.mu.Unlock()
		w.feed = nil
		for id := range f.unacknowledged {
			log.Printf("%s: job %s was not acknowledged before its stream ended; dropped", w.name, id)
			w.inHand--
		}
	}()
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if job := response.GetJob(); job != nil {
			w.delivered(f, job)
		} else if answer := response.GetAcknowledged(); answer != nil {
			w.acknowledged(f, answer, start)
		}
	}
}

// delivered takes a job delivered on the stream: it uses a slot and one credit, and is
// acknowledged at once. One delivered again (its lease ended while its acknowledgement waited for
// a retry) keeps its slot and its waiting acknowledgement, and gets its credit back.
func (w *worker) delivered(f *feed, job *pb.Job) {
	w.mu.Lock()
	f.credit--
	if _, again := f.unacknowledged[job.GetId()]; again {
		w.grantFreeSlots()
		w.mu.Unlock()
		return
	}
	w.inHand++
	f.unacknowledged[job.GetId()] = &delivery{job: job, backoff: firstBackoff, giveUpAt: time.Now().Add(jobRetryBudget)}
	w.mu.Unlock()
	f.send(acknowledge(job.GetId()))
}

// acknowledged handles the answer to an acknowledgement: the job is worked on, acknowledged
// again after a wait, or dropped.
func (w *worker) acknowledged(f *feed, answer *pb.StreamJobsAcknowledged, start func(*pb.Job)) {
	id := answer.GetJobId()
	w.mu.Lock()
	d := f.unacknowledged[id]
	delete(f.unacknowledged, id)
	w.mu.Unlock()
	if d == nil {
		return
	}
	if answer.GetError() == nil {
		start(d.job)
		return
	}
	refusal := status.FromProto(answer.GetError())
	code := refusal.Code()
	if (code == codes.Unavailable || code == codes.ResourceExhausted) && !f.isClosed() {
		wait, ok := retryDelay(refusal)
		if !ok {
			wait, d.backoff = backoffStep(d.backoff)
		}
		if time.Now().Add(wait).Before(d.giveUpAt) {
			log.Printf("%s: AcknowledgeJob answered %s; retrying in %d ms", w.name, grpcCodeName(code), wait.Milliseconds())
			w.mu.Lock()
			f.unacknowledged[id] = d
			w.mu.Unlock()
			time.AfterFunc(wait, func() { f.send(acknowledge(id)) })
			return
		}
	}
	if code == codes.Aborted {
		log.Printf("%s: job %s is held by another worker; dropped", w.name, id)
	} else {
		log.Printf("%s: job %s: gave up: %v", w.name, id, refusal.Err())
	}
	w.finished()
}

// finished frees the slot of a job done with (reported, or dropped).
func (w *worker) finished() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inHand--
	w.grantFreeSlots()
}

// grantFreeSlots gives the stream credit for the free slots it holds none for; w.mu is held. Jobs
// held from an earlier stream free slots that the stream's first credit already counted, so they
// bring no credit.
func (w *worker) grantFreeSlots() {
	if f := w.feed; f != nil {
		if more := w.slots - w.inHand - f.credit; more > 0 {
			f.credit += more
			f.send(&pb.StreamJobsRequest{Request: &pb.StreamJobsRequest_Credit{Credit: &pb.StreamJobsCredit{Jobs: int32(more)}}})
		}
	}
}

// process runs one polled job: acknowledge, then complete.
func (w *worker) process(job *pb.Job) error {
	id := job.GetId()
	err := w.call(context.Background(), "AcknowledgeJob", false, func(ctx context.Context) error {
		_, err := w.client.AcknowledgeJob(ctx, &pb.AcknowledgeJobRequest{JobId: id, Nonce: job.GetNonce()})
		return err
	})
	if status.Code(err) == codes.Aborted {
		log.Printf("%s: job %s is held by another worker; dropped", w.name, id)
		return nil
	} else if err != nil {
		return err
	}
	return w.complete(job)
}

// complete runs an acknowledged job: read details, work, report. Its calls are not cancelled by
// SIGTERM, so that a job in hand is finished.
func (w *worker) complete(job *pb.Job) error {
	ctx := context.Background()
	id := job.GetId()
	var details *pb.JobDetails
	err := w.call(ctx, "GetJobDetails", false, func(ctx context.Context) error {
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

	// With ARTIFACTS=on the work reads every input artifact first, and a job that succeeds writes
	// every output artifact before its result. An artifact the gateway refuses fails the job.
	var inputs []inputRead
	if w.useArtifacts {
		inputs, err = w.readInputs(ctx, id, data)
	}

	// The "work": a pause as long as the job asks for.
	if err == nil {
		workMillis, _ := strconv.Atoi(configuration["WorkMillis"])
		time.Sleep(time.Duration(workMillis) * time.Millisecond)
	}
	if err == nil && w.useArtifacts && (outcome == "succeed" || (outcome == "continue" && data.ContinuationToken != nil)) {
		err = w.writeOutputs(ctx, id, data, inputs)
	}
	var refused *artifactFailed
	if errors.As(err, &refused) {
		log.Printf("%s: job %s: %v", w.name, id, refused)
	} else if err != nil {
		return err
	}

	var result string
	switch {
	case refused != nil:
		result = "failed"
		err = w.call(ctx, "PutJobFailureResult", false, func(ctx context.Context) error {
			_, err := w.client.PutJobFailureResult(ctx, &pb.PutJobFailureResultRequest{JobId: id, FailureDetails: &pb.FailureDetails{
				Type: pb.FailureType_FAILURE_TYPE_JOB_FAILED, Message: refused.Error(), ExternalExecutionId: &executionID,
			}})
			return err
		})
	case outcome == "continue" && data.ContinuationToken == nil:
		// Half done: CodePipeline creates a follow-up job carrying the token, which writes the
		// outputs.
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

// inputRead is what the work learnt of an input artifact.
type inputRead struct {
	name   string
	size   int64
	sha256 string // hex
}

// manifest is what the worker writes to each output artifact: the job, the output's name, and
// for each input artifact (in the job data's order) its name, size and SHA-256 (hex).
func manifest(jobID, output string, inputs []inputRead) []byte {
	var text strings.Builder
	fmt.Fprintf(&text, "job %s\noutput %s\n", jobID, output)
	for _, input := range inputs {
		fmt.Fprintf(&text, "input %s %d %s\n", input.name, input.size, input.sha256)
	}
	return []byte(text.String())
}

// artifactFailed is an artifact transfer the gateway refused (not a pause): the job fails,
// saying why.
type artifactFailed struct {
	what   string
	status *status.Status
}

func (f *artifactFailed) Error() string {
	message := fmt.Sprintf("%s: %s %s", f.what, grpcCodeName(f.status.Code()), f.status.Message())
	if len(message) > 5000 {
		message = message[:5000]
	}
	return message
}

// refusal makes a failed transfer's error an artifactFailed, unless it is a pause that outlasted
// the retries (the job is then given up, as for its other calls).
func refusal(what string, err error) error {
	if code := status.Code(err); err == nil || code == codes.Unavailable || code == codes.ResourceExhausted {
		return err
	}
	return &artifactFailed{what: what, status: status.Convert(err)}
}

// readInputs downloads every input artifact through the gateway, hashing the bytes as they come
// (nothing is kept).
func (w *worker) readInputs(ctx context.Context, id string, data *pb.JobData) ([]inputRead, error) {
	job := &pb.ArtifactJob{Job: &pb.ArtifactJob_JobId{JobId: id}}
	var read []inputRead
	for _, artifact := range data.GetInputArtifacts() {
		name := artifact.GetName()
		var input inputRead
		err := w.retry(ctx, "DownloadInputArtifact", false, transferTimeout, func(ctx context.Context) error {
			// A retry starts the download afresh.
			stream, err := w.artifacts.DownloadInputArtifact(ctx, &pb.DownloadInputArtifactRequest{Job: job, ArtifactName: name})
			if err != nil {
				return err
			}
			digest, size := sha256.New(), int64(0)
			for {
				response, err := stream.Recv() // the metadata first, then the bytes
				if err == io.EOF {
					break
				} else if err != nil {
					return err
				}
				chunk := response.GetChunk()
				digest.Write(chunk)
				size += int64(len(chunk))
			}
			input = inputRead{name: name, size: size, sha256: hex.EncodeToString(digest.Sum(nil))}
			return nil
		})
		if err != nil {
			return nil, refusal("input artifact "+name, err)
		}
		log.Printf("%s: job %s: read input artifact %s (%d bytes)", w.name, id, name, input.size)
		read = append(read, input)
	}
	return read, nil
}

// writeOutputs uploads every output artifact through the gateway: the manifest of the inputs,
// declared with its size (the gateway stores nothing if the bytes differ).
func (w *worker) writeOutputs(ctx context.Context, id string, data *pb.JobData, inputs []inputRead) error {
	job := &pb.ArtifactJob{Job: &pb.ArtifactJob_JobId{JobId: id}}
	for _, artifact := range data.GetOutputArtifacts() {
		name := artifact.GetName()
		body := manifest(id, name, inputs)
		size := int64(len(body))
		header := &pb.UploadOutputArtifactHeader{Job: job, ArtifactName: name, ContentType: "text/plain", SizeBytes: &size}
		err := w.retry(ctx, "UploadOutputArtifact", false, transferTimeout, func(ctx context.Context) error {
			stream, err := w.artifacts.UploadOutputArtifact(ctx)
			if err != nil {
				return err
			}
			// A failed Send shows in CloseAndRecv, which returns the call's status.
			_ = stream.Send(&pb.UploadOutputArtifactRequest{Request: &pb.UploadOutputArtifactRequest_Header{Header: header}})
			_ = stream.Send(&pb.UploadOutputArtifactRequest{Request: &pb.UploadOutputArtifactRequest_Chunk{Chunk: body}})
			// The end: the gateway stores the object only once it knows every byte came.
			_ = stream.Send(&pb.UploadOutputArtifactRequest{Request: &pb.UploadOutputArtifactRequest_End{End: &pb.UploadOutputArtifactEnd{}}})
			_, err = stream.CloseAndRecv()
			return err
		})
		if err != nil {
			return refusal("output artifact "+name, err)
		}
		log.Printf("%s: job %s: wrote output artifact %s (%d bytes)", w.name, id, name, size)
	}
	return nil
}

// call runs one RPC, waiting and retrying while the answer is UNAVAILABLE or RESOURCE_EXHAUSTED:
// as long as RetryInfo says, else a jittered exponential backoff. A job's calls give up after
// jobRetryBudget; a poll retries until ctx is cancelled.
func (w *worker) call(ctx context.Context, name string, untilCancelled bool, rpc func(context.Context) error) error {
	return w.retry(ctx, name, untilCancelled, callTimeout, rpc)
}

// retry runs rpc (one call, or one whole transfer), each attempt within timeout, as call says.
// An answer marked indeterminate (it was lost: the call may have taken effect) is repeated too,
// which is safe; a result repeated after one that answers FAILED_PRECONDITION
// InvalidJobStateException was delivered by the earlier attempt.
func (w *worker) retry(ctx context.Context, name string, untilCancelled bool, timeout time.Duration, rpc func(context.Context) error) error {
	backoff := firstBackoff
	giveUpAt := time.Now().Add(jobRetryBudget)
	uncertain := false // an earlier attempt may have taken effect
	for {
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		err := rpc(callCtx)
		cancel()
		code := status.Code(err)
		info := errorInfo(status.Convert(err))
		if uncertain && strings.HasPrefix(name, "Put") && code == codes.FailedPrecondition &&
			info.GetReason() == "InvalidJobStateException" {
			log.Printf("%s: %s was delivered by an earlier attempt", w.name, name)
			return nil
		}
		indeterminate := info.GetMetadata()["indeterminate"] == "true"
		if err == nil || (code != codes.Unavailable && code != codes.ResourceExhausted && !indeterminate) {
			return err
		}
		uncertain = uncertain || indeterminate
		wait, ok := retryDelay(status.Convert(err))
		if !ok {
			wait, backoff = backoffStep(backoff)
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

// backoffStep is a jittered wait of up to backoff, and the backoff after it: doubled, to at most
// maxBackoff.
func backoffStep(backoff time.Duration) (wait, next time.Duration) {
	if next = 2 * backoff; next > maxBackoff {
		next = maxBackoff
	}
	return time.Duration(rand.Int63n(int64(backoff))), next
}

// retryDelay is the wait a google.rpc.RetryInfo in the status details asks for, if any.
func retryDelay(s *status.Status) (time.Duration, bool) {
	for _, detail := range s.Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok {
			delay := info.GetRetryDelay()
			return time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos()), true
		}
	}
	return 0, false
}

// errorInfo is the google.rpc.ErrorInfo in the status details, or nil.
func errorInfo(s *status.Status) *errdetails.ErrorInfo {
	for _, detail := range s.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
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
