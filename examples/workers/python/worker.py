"""A CodePipeline job worker that speaks gRPC to codepipeline-gateway: for a custom action, or
(ACTION_OWNER=ThirdParty) for a third-party (partner) action.

Gets jobs for as many free slots as it has, by polling (GATEWAY_MODE=poll) or from the gateway's
job feed (GATEWAY_MODE=stream, with credit = free slots; custom actions only); acknowledges each
(dropping it when another worker holds it), reads its details, reads its input artifacts and writes
its output artifacts through the gateway's ArtifactService (ARTIFACTS=on, the default: no AWS SDK,
no S3 credentials), does the work its configuration asks for, and reports the result. With
OTEL_EXPORTER_OTLP_ENDPOINT set it exports OpenTelemetry traces (a span per poll, per job and per
call); without it, OpenTelemetry is never imported. Settings come from the environment; see
README.md. SIGTERM stops taking jobs, lets the jobs in
hand finish, and exits 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from codepipeline.jobworker.v1 import job_worker_pb2 as pb
from codepipeline.jobworker.v1 import job_worker_pb2_grpc as pb_grpc

# Worth retrying after a pause: the gateway or CodePipeline is throttling or briefly unreachable.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# A poll, or the opening of a job stream, failing with these is a configuration problem that
# waiting does not fix.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
}
CALL_TIMEOUT_SECONDS = 20
TRANSFER_TIMEOUT_SECONDS = 600  # an artifact's download or upload, however large
JOB_RETRY_SECONDS = 120  # how long a job's call keeps retrying before the job is given up
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0
MODES = ("poll", "stream")
DEFAULT_MODE = "stream"
# ACTION_OWNER, normalised (case, `_`, `-` and an `ACTION_OWNER_` prefix ignored) -> owner.
OWNERS = {"CUSTOM": pb.ACTION_OWNER_CUSTOM, "THIRDPARTY": pb.ACTION_OWNER_THIRD_PARTY}

log = logging.getLogger("worker")


class ArtifactFailed(Exception):
    """An artifact transfer the gateway refused (not a pause): the job fails, saying why."""

    def __init__(self, what: str, err: grpc.RpcError) -> None:
        super().__init__(f"{what}: {err.code().name} {err.details()}"[:5000])


def manifest(job_id: str, output: str, inputs: list[tuple[str, int, str]]) -> bytes:
    """What the worker writes to each output artifact: the job, the output's name, and for each
    input artifact (in the job data's order) its name, size and SHA-256 (hex)."""
    lines = [f"job {job_id}", f"output {output}", *(f"input {name} {size} {sha256}" for name, size, sha256 in inputs)]
    return "".join(f"{line}\n" for line in lines).encode()


def retry_delay(err: grpc.RpcError | None) -> float | None:
    """The wait a google.rpc.RetryInfo in the status details asks for, if there is one."""
    try:
        return retry_delay_of(rpc_status.from_call(err)) if err else None
    except ValueError:
        return None


def retry_delay_of(status: status_pb2.Status | None) -> float | None:
    """The wait a google.rpc.RetryInfo among a status's details asks for, if there is one."""
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo in a failed call's status details, if there is one."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        return None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(err: grpc.RpcError) -> str:
    """The reason of a google.rpc.ErrorInfo in a failed call's status details, or ""."""
    info = error_info(err)
    return info.reason if info else ""


def indeterminate(err: grpc.RpcError) -> bool:
    """Whether the gateway says the failed call may have taken effect (its answer was lost)."""
    info = error_info(err)
    return bool(info) and info.metadata.get("indeterminate") == "true"


def backoff_step(backoff: float) -> tuple[float, float]:
    """A jittered wait of up to `backoff`, and the backoff after it: doubled, to at most
    MAX_BACKOFF_SECONDS."""
    return random.uniform(0, backoff), min(backoff * 2, MAX_BACKOFF_SECONDS)


class NoSpan:
    """The span of a worker that does not trace: attributes go nowhere."""

    def set_attribute(self, key: str, value: object) -> None:
        pass


class NoTracing:
    """Tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT): nothing is imported, made or sent."""

    def instrument(self, channel: grpc.Channel) -> grpc.Channel:
        return channel

    def span(self, name: str, parent: object = None, **attributes: object):
        return contextlib.nullcontext(NoSpan())

    def current_context(self) -> object:
        return None

    def shutdown(self) -> None:
        pass


class Tracing:
    """OpenTelemetry traces, exported over OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT: a span per
    poll (its jobs' spans are its children, so a job's trace starts at the poll that found it),
    per job (in stream mode, a trace of its own), and a client span per call, made by
    opentelemetry-instrumentation-grpc on this worker's channel only, which sends the call's W3C
    traceparent to the gateway. The SDK reads the other OTEL_* settings (sampler, batch delays,
    resource attributes, exporter headers). Attributes are ids and names, never job data."""

    def __init__(self, worker_name: str) -> None:
        # Imported here, not at the top: a worker that does not trace needs none of these.
        from opentelemetry import context
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.grpc import client_interceptor
        from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create(
            {
                "service.name": os.environ.get("OTEL_SERVICE_NAME") or "codepipeline-worker-python",
                "service.instance.id": worker_name,
            }
        )
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("codepipeline-worker")
        self._context = context
        self._interceptor = client_interceptor(tracer_provider=self.provider)
        self._intercept_channel = intercept_channel

    def instrument(self, channel: grpc.Channel) -> grpc.Channel:
        """The channel with a client span around each call, its context sent as traceparent.
        Only this channel: the exporter's own calls make no spans."""
        return self._intercept_channel(channel, self._interceptor)

    def span(self, name: str, parent: object = None, **attributes: object):
        """A span, current in this thread while it lasts; a child of `parent` (a context from
        current_context()), else of the current span, else a new trace."""
        return self.tracer.start_as_current_span(name, context=parent, attributes=attributes)

    def current_context(self) -> object:
        """The current span's context, for spans started in another thread to be its children."""
        return self._context.get_current()

    def shutdown(self) -> None:
        """Exports the spans not sent yet."""
        self.provider.shutdown()


def start_tracing(worker_name: str) -> NoTracing | Tracing:
    return Tracing(worker_name) if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else NoTracing()


class Feed:
    """One StreamJobs stream: what the worker sends on it, the credit the stream holds, and the
    jobs delivered on it that are not acknowledged yet."""

    def __init__(self, subscription: pb.StreamJobsSubscription) -> None:
        self.outgoing: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler
        self.outgoing.put(pb.StreamJobsRequest(subscription=subscription))
        self.credit = subscription.max_outstanding_jobs
        self.unacknowledged: dict[str, tuple[pb.Job, float, float]] = {}  # job id -> job, backoff, give up at
        self.closed = False

    def requests(self):
        while (request := self.outgoing.get()) is not None:
            yield request

    def send(self, **request) -> None:
        if not self.closed:
            self.outgoing.put(pb.StreamJobsRequest(**request))

    def close(self) -> None:
        """Closes the sending side: the gateway delivers no more and ends the stream."""
        self.closed = True
        self.outgoing.put(None)


class Worker:
    def __init__(self) -> None:
        env = os.environ
        self.name = env.get("WORKER_NAME") or f"python-{socket.gethostname()}-{os.getpid()}"
        self.slots = int(env.get("MAX_IN_FLIGHT", "4"))
        self.poll_interval = float(env.get("POLL_INTERVAL", "5"))
        self.owner = env.get("ACTION_OWNER") or "Custom"
        owner = OWNERS.get(self.owner.upper().removeprefix("ACTION_OWNER_").replace("_", "").replace("-", ""))
        self.third_party = owner == pb.ACTION_OWNER_THIRD_PARTY
        # A third-party action has no job feed: it is polled.
        self.mode = env.get("GATEWAY_MODE") or ("poll" if self.third_party else DEFAULT_MODE)
        # Third-party calls carry this client token; empty, the gateway supplies the token it holds
        # for the job's client. Secret: never logged.
        self.client_token = env.get("CLIENT_TOKEN", "")
        category = env.get("ACTION_CATEGORY", "Build").upper()
        self.action_type = pb.ActionTypeId(
            category=pb.ActionCategory.Value(
                category if category.startswith("ACTION_CATEGORY_") else f"ACTION_CATEGORY_{category}"
            ),
            owner=owner or pb.ACTION_OWNER_UNSPECIFIED,
            provider=env.get("ACTION_PROVIDER", "DemoBuilder"),
            version=env.get("ACTION_VERSION", "1"),
        )
        token = env.get("GATEWAY_TOKEN")
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        address = env.get("GATEWAY_ADDRESS", "localhost:50051")
        if ca_file := env.get("GATEWAY_TLS_CA"):
            with open(ca_file, "rb") as ca:
                credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.tracing = start_tracing(self.name)
        service = pb_grpc.ThirdPartyJobWorkerServiceStub if self.third_party else pb_grpc.JobWorkerServiceStub
        self.stub = service(self.tracing.instrument(self.channel))
        self.artifact_stub = pb_grpc.ArtifactServiceStub(self.tracing.instrument(self.channel))
        # ARTIFACTS=off: the job's artifacts are left alone (the work is the pause alone).
        self.artifacts = env.get("ARTIFACTS", "on").lower()
        self.stopping = threading.Event()
        self.in_flight = 0  # jobs in hand, from their delivery to their result
        self.slot_freed = threading.Condition()
        self.feed: Feed | None = None  # the open job stream, in stream mode

    def call(self, rpc: str, request, *, until_stopped: bool = False):
        """Calls a job-worker RPC, waiting and retrying while the answer is UNAVAILABLE or
        RESOURCE_EXHAUSTED: as long as RetryInfo says, else a jittered exponential backoff.
        A job's calls give up after JOB_RETRY_SECONDS; a poll retries until the worker stops."""
        stub = getattr(self.stub, rpc)
        attempt = lambda: stub(request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)  # noqa: E731
        return self.retrying(rpc, attempt, until_stopped=until_stopped)

    def retrying(self, rpc: str, attempt, *, until_stopped: bool = False):
        """Runs `attempt` (one call, or one whole transfer) again while it fails UNAVAILABLE or
        RESOURCE_EXHAUSTED, as `call` does, or with `indeterminate=true` (the answer was lost:
        repeating is safe). A result repeated after such a failure that answers
        FAILED_PRECONDITION InvalidJobStateException was delivered by the earlier attempt."""
        backoff = FIRST_BACKOFF_SECONDS
        give_up_at = time.monotonic() + JOB_RETRY_SECONDS
        uncertain = False  # an earlier attempt may have taken effect
        while True:
            try:
                return attempt()
            except grpc.RpcError as err:
                if (
                    uncertain
                    and rpc.startswith("Put")
                    and err.code() == grpc.StatusCode.FAILED_PRECONDITION
                    and error_reason(err) == "InvalidJobStateException"
                ):
                    # A result repeated after one that took effect: the job is done already.
                    log.info("%s: %s was delivered by an earlier attempt", self.name, rpc)
                    return None
                if err.code() not in RETRYABLE and not indeterminate(err):
                    raise
                uncertain = uncertain or indeterminate(err)
                wait = retry_delay(err)
                if wait is None:
                    wait, backoff = backoff_step(backoff)
                log.info("%s: %s answered %s; retrying in %d ms", self.name, rpc, err.code().name, wait * 1000)
                if until_stopped:
                    if self.stopping.wait(wait):
                        raise
                elif time.monotonic() + wait > give_up_at:
                    raise
                else:
                    time.sleep(wait)

    def stop(self) -> None:
        """SIGTERM or SIGINT: take no more jobs (in stream mode, close the stream's sending side)."""
        self.stopping.set()
        if feed := self.feed:
            feed.close()

    def run(self) -> int:
        if self.action_type.owner == pb.ACTION_OWNER_UNSPECIFIED:
            log.error("%s: ACTION_OWNER must be Custom or ThirdParty, not %r", self.name, self.owner)
            return 1
        if self.mode not in MODES:
            log.error("%s: GATEWAY_MODE must be poll or stream, not %r", self.name, self.mode)
            return 1
        if self.artifacts not in ("on", "off"):
            log.error("%s: ARTIFACTS must be on or off, not %r", self.name, self.artifacts)
            return 1
        if self.third_party and self.mode != "poll":
            log.error("%s: third-party actions have no job feed: GATEWAY_MODE must be poll", self.name)
            return 1
        category = pb.ActionCategory.Name(self.action_type.category)
        if self.third_party:
            category += "/ThirdParty"
            tokens = "its own (CLIENT_TOKEN)" if self.client_token else "those the gateway holds"
            log.info("%s: third-party jobs; client tokens: %s", self.name, tokens)
        log.info(
            "%s: %s for %s/%s/%s with %d slots",
            self.name, "polling" if self.mode == "poll" else "streaming", category,
            self.action_type.provider, self.action_type.version, self.slots,
        )  # fmt: skip
        with ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="job") as pool:
            code = self.stream(pool) if self.mode == "stream" else self.poll(pool)
            log.info("%s: stopping; finishing %d job(s) in hand", self.name, self.in_flight)
        self.channel.close()
        log.info("%s: stopped", self.name)
        return code

    def poll(self, pool: ThreadPoolExecutor) -> int:
        """PollForJobs (PollForThirdPartyJobs) for as many jobs as there are free slots, until the
        worker stops."""
        if self.third_party:
            rpc, request_type = "PollForThirdPartyJobs", pb.PollForThirdPartyJobsRequest
            process = self.process_third_party
        else:
            rpc, request_type, process = "PollForJobs", pb.PollForJobsRequest, self.process
        action_type = "/".join(
            (
                pb.ActionCategory.Name(self.action_type.category).removeprefix("ACTION_CATEGORY_").title(),
                "ThirdParty" if self.third_party else "Custom",
                self.action_type.provider,
                self.action_type.version,
            )
        )
        while not self.stopping.is_set():
            with self.slot_freed:
                if not self.slot_freed.wait_for(lambda: self.in_flight < self.slots, timeout=0.5):
                    continue  # all slots busy: look at `stopping` again, then wait on
                free = self.slots - self.in_flight
            parent = None
            try:
                with self.tracing.span("poll", **{"codepipeline.action_type": action_type}) as span:
                    request = request_type(action_type_id=self.action_type, max_batch_size=free)
                    jobs = self.call(rpc, request, until_stopped=True).jobs
                    span.set_attribute("codepipeline.jobs", len(jobs))
                    parent = self.tracing.current_context()  # the jobs' spans are the poll's children
            except grpc.RpcError as err:
                if self.stopping.is_set():
                    break
                if err.code() in FATAL:
                    log.error("%s: %s failed: %s %s", self.name, rpc, err.code().name, err.details())
                    return 1
                log.warning("%s: %s failed: %s; polling again later", self.name, rpc, err.code().name)
                jobs = []
            for job in jobs:
                with self.slot_freed:
                    self.in_flight += 1
                pool.submit(self.run_job, process, job, parent)
            if not jobs:
                self.stopping.wait(self.poll_interval * random.uniform(0.5, 1.5))
        return 0

    def stream(self, pool: ThreadPoolExecutor) -> int:
        """StreamJobs with credit = free slots, reopened with backoff whenever it ends, until the
        worker stops."""
        backoff = FIRST_BACKOFF_SECONDS
        subscription = pb.StreamJobsSubscription(action_type_id=self.action_type, max_outstanding_jobs=self.slots)
        while not self.stopping.is_set():
            feed = Feed(subscription)
            opened_at = time.monotonic()
            with self.slot_freed:
                self.feed = feed
            if self.stopping.is_set():  # SIGTERM came before the feed was in place
                feed.close()
            error = None
            try:
                for response in self.stub.StreamJobs(feed.requests(), metadata=self.metadata):
                    if response.HasField("job"):
                        self.delivered(feed, response.job)
                    else:
                        self.acknowledged(feed, response.acknowledged, pool)
            except grpc.RpcError as err:
                error = err
            with self.slot_freed:
                self.feed = None
                feed.close()
                for job, _ in feed.unacknowledged.values():
                    log.info("%s: job %s was not acknowledged before its stream ended; dropped", self.name, job.id)
                    self.in_flight -= 1
                feed.unacknowledged.clear()
            if self.stopping.is_set():
                break
            if error is not None and error.code() in FATAL:
                log.error("%s: StreamJobs failed: %s %s", self.name, error.code().name, error.details())
                return 1
            if time.monotonic() - opened_at >= MAX_BACKOFF_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS  # a stream that ran a good while: start afresh
            wait = retry_delay(error)
            if wait is None:
                wait, backoff = backoff_step(backoff)
            ended = f"{error.code().name} {error.details()}" if error else "OK"
            log.info("%s: StreamJobs ended: %s; reopening in %d ms", self.name, ended, wait * 1000)
            self.stopping.wait(wait)
        return 0

    def delivered(self, feed: Feed, job: pb.Job) -> None:
        """A job delivered on the stream takes a slot and one credit; acknowledge it at once. One
        delivered again (its lease ended while its acknowledgement waited for a retry) keeps its
        slot and its waiting acknowledgement, and gets its credit back."""
        with self.slot_freed:
            feed.credit -= 1
            if job.id in feed.unacknowledged:
                self.grant_free_slots()
                return
            self.in_flight += 1
            feed.unacknowledged[job.id] = (job, FIRST_BACKOFF_SECONDS, time.monotonic() + JOB_RETRY_SECONDS)
        feed.send(acknowledge=pb.StreamJobsAcknowledge(job_id=job.id))

    def acknowledged(self, feed: Feed, answer: pb.StreamJobsAcknowledged, pool: ThreadPoolExecutor) -> None:
        """The answer to an acknowledgement: work the job, acknowledge again later, or drop it."""
        with self.slot_freed:
            job, backoff, give_up_at = feed.unacknowledged.pop(answer.job_id, (None, 0, 0))
        if job is None:
            return
        if not answer.HasField("error"):
            pool.submit(self.run_job, self.complete, job)
            return
        code = code_pb2.Code.Name(answer.error.code)
        if code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED") and not feed.closed:
            wait = retry_delay_of(answer.error)
            if wait is None:
                wait, backoff = backoff_step(backoff)
            if time.monotonic() + wait < give_up_at:
                log.info("%s: AcknowledgeJob answered %s; retrying in %d ms", self.name, code, wait * 1000)
                with self.slot_freed:
                    feed.unacknowledged[job.id] = (job, backoff, give_up_at)
                again = {"acknowledge": pb.StreamJobsAcknowledge(job_id=job.id)}
                retry = threading.Timer(wait, feed.send, kwargs=again)
                retry.daemon = True  # a retry still waiting when the worker exits is moot
                retry.start()
                return
        if code == "ABORTED":
            log.info("%s: job %s is held by another worker; dropped", self.name, job.id)
        else:
            log.warning("%s: job %s: gave up: %s %s", self.name, job.id, code, answer.error.message)
        self.finished()

    def finished(self) -> None:
        """A job is done with (reported, or dropped): its slot is free."""
        with self.slot_freed:
            self.in_flight -= 1
            self.slot_freed.notify()
            self.grant_free_slots()

    def grant_free_slots(self) -> None:
        """In stream mode, gives the stream credit for the free slots it holds none for. Jobs held
        from an earlier stream free slots that its first credit already counted, so they bring none."""
        with self.slot_freed:
            feed = self.feed
            if feed and not feed.closed and (more := self.slots - self.in_flight - feed.credit) > 0:
                feed.credit += more
                feed.send(credit=pb.StreamJobsCredit(jobs=more))

    def run_job(self, work, job: pb.Job | pb.ThirdPartyJob, parent: object = None) -> None:
        """Works one job in its span (a child of `parent`, the poll's, if any)."""
        job_id = job.job_id if isinstance(job, pb.ThirdPartyJob) else job.id
        try:
            with self.tracing.span("job", parent, **{"codepipeline.job_id": job_id}) as span:
                span.set_attribute("codepipeline.job.result", work(job))
        except Exception:
            log.exception("%s: job %s: gave up", self.name, job_id)
        finally:
            self.finished()

    def process(self, job: pb.Job) -> str:
        """A polled job: AcknowledgeJob with its nonce, then the rest."""
        try:
            self.call("AcknowledgeJob", pb.AcknowledgeJobRequest(job_id=job.id, nonce=job.nonce))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.ABORTED:
                log.info("%s: job %s is held by another worker; dropped", self.name, job.id)
                return "dropped"
            raise
        return self.complete(job)

    def complete(self, job: pb.Job) -> str:
        """An acknowledged job: its details, the work, the result."""
        details = self.call("GetJobDetails", pb.GetJobDetailsRequest(job_id=job.id)).job_details
        return self.work(
            pb.ArtifactJob(job_id=job.id),
            job.id,
            details.data,
            put_success=lambda **result: self.call(
                "PutJobSuccessResult", pb.PutJobSuccessResultRequest(job_id=job.id, **result)
            ),
            put_failure=lambda **result: self.call(
                "PutJobFailureResult", pb.PutJobFailureResultRequest(job_id=job.id, **result)
            ),
        )

    def process_third_party(self, job: pb.ThirdPartyJob) -> str:
        """A polled third-party job: its details (and nonce), AcknowledgeThirdPartyJob with the
        nonce, the work, the result. Every call names the job's client and carries CLIENT_TOKEN;
        left empty, the gateway supplies the token it holds for that client."""
        client = {"client_id": job.client_id, "client_token": self.client_token}
        try:
            request = pb.GetThirdPartyJobDetailsRequest(job_id=job.job_id, **client)
            details = self.call("GetThirdPartyJobDetails", request).job_details
            request = pb.AcknowledgeThirdPartyJobRequest(job_id=job.job_id, nonce=details.nonce, **client)
            self.call("AcknowledgeThirdPartyJob", request)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.ABORTED:
                log.info("%s: job %s is held by another worker; dropped", self.name, job.job_id)
                return "dropped"
            if err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
                # FAILED_PRECONDITION CLIENT_TOKEN_UNAVAILABLE: neither this worker nor the gateway
                # has the client's token; PERMISSION_DENIED: the token sent was refused. Nothing
                # can be said about the job, not even its failure: CodePipeline hands it out again
                # later, to this worker or another, and other clients' jobs go on meanwhile.
                log.error(
                    "%s: job %s: %s %s: %s; dropped (the client token of client %s: set CLIENT_TOKEN, "
                    "or give the gateway a --client-token-file that holds it)",
                    self.name, job.job_id, err.code().name, error_reason(err), err.details(), job.client_id,
                )  # fmt: skip
                return "dropped"
            raise
        return self.work(
            pb.ArtifactJob(third_party=pb.ThirdPartyArtifactJob(job_id=job.job_id, **client)),
            job.job_id,
            details.data,
            put_success=lambda **result: self.call(
                "PutThirdPartyJobSuccessResult",
                pb.PutThirdPartyJobSuccessResultRequest(job_id=job.job_id, **client, **result),
            ),
            put_failure=lambda **result: self.call(
                "PutThirdPartyJobFailureResult",
                pb.PutThirdPartyJobFailureResultRequest(job_id=job.job_id, **client, **result),
            ),
        )

    def work(self, job: pb.ArtifactJob, job_id: str, data: pb.JobData, put_success, put_failure) -> str:
        """The "work" a job's configuration asks for, then its result, sent with `put_success` or
        `put_failure` (each takes the result's fields); returns what was reported. With ARTIFACTS=on
        the work reads every input artifact first, and a job that succeeds writes every output
        artifact before its result: a manifest of the inputs (see `manifest`). An artifact the
        gateway refuses fails the job."""
        configuration = data.action_configuration.configuration
        outcome = configuration.get("Outcome", "succeed")
        execution_id = f"{self.name}:{job_id}"
        try:
            inputs = self.read_inputs(job, job_id, data) if self.artifacts == "on" else []

            # The "work": a pause as long as the job asks for.
            time.sleep(int(configuration.get("WorkMillis", "0")) / 1000)

            if outcome == "continue" and not data.HasField("continuation_token"):
                # Half done: CodePipeline creates a follow-up job carrying the token, which writes
                # the outputs.
                details = pb.ExecutionDetails(
                    summary="first half done", external_execution_id=execution_id, percent_complete=50
                )
                put_success(continuation_token="continued", execution_details=details)
                result = "continued"
            elif outcome in ("succeed", "continue"):
                if self.artifacts == "on":
                    self.write_outputs(job, job_id, data, inputs)
                details = pb.ExecutionDetails(summary="done", external_execution_id=execution_id, percent_complete=100)
                put_success(execution_details=details)
                result = "succeeded"
            else:
                failure = pb.FailureDetails(
                    type=pb.FAILURE_TYPE_JOB_FAILED, message="failed as asked", external_execution_id=execution_id
                )
                if outcome != "fail":
                    failure.type = pb.FAILURE_TYPE_CONFIGURATION_ERROR
                    failure.message = f"Outcome={outcome} is not one of succeed, fail, continue"
                put_failure(failure_details=failure)
                result = "failed"
        except ArtifactFailed as failed:
            log.warning("%s: job %s: %s", self.name, job_id, failed)
            failure = pb.FailureDetails(
                type=pb.FAILURE_TYPE_JOB_FAILED, message=str(failed), external_execution_id=execution_id
            )
            put_failure(failure_details=failure)
            result = "failed"
        log.info("%s: reported %s %s", self.name, job_id, result)
        return result

    def read_inputs(self, job: pb.ArtifactJob, job_id: str, data: pb.JobData) -> list[tuple[str, int, str]]:
        """Downloads every input artifact through the gateway, hashing the bytes as they come
        (nothing is kept): (name, size, SHA-256 hex) each, in the job data's order."""
        read = []
        for artifact in data.input_artifacts:
            request = pb.DownloadInputArtifactRequest(job=job, artifact_name=artifact.name)

            def download(request=request) -> tuple[int, str]:
                # A retry starts the download afresh.
                digest, size = hashlib.sha256(), 0
                responses = self.artifact_stub.DownloadInputArtifact(
                    request, metadata=self.metadata, timeout=TRANSFER_TIMEOUT_SECONDS
                )
                for response in responses:  # the metadata first, then the bytes
                    if response.WhichOneof("response") == "chunk":
                        digest.update(response.chunk)
                        size += len(response.chunk)
                return size, digest.hexdigest()

            try:
                size, sha256 = self.retrying("DownloadInputArtifact", download)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE:
                    raise  # retried for JOB_RETRY_SECONDS: the job is given up
                raise ArtifactFailed(f"input artifact {artifact.name}", err) from err
            log.info("%s: job %s: read input artifact %s (%d bytes)", self.name, job_id, artifact.name, size)
            read.append((artifact.name, size, sha256))
        return read

    def write_outputs(self, job: pb.ArtifactJob, job_id: str, data: pb.JobData, inputs) -> None:
        """Uploads every output artifact through the gateway: the manifest of `inputs`, declared
        with its size (the gateway stores nothing if the bytes differ)."""
        for artifact in data.output_artifacts:
            body = manifest(job_id, artifact.name, inputs)
            header = pb.UploadOutputArtifactHeader(
                job=job, artifact_name=artifact.name, content_type="text/plain", size_bytes=len(body)
            )
            # The end: the gateway stores the object only once it knows every byte came.
            messages = (
                pb.UploadOutputArtifactRequest(header=header),
                pb.UploadOutputArtifactRequest(chunk=body),
                pb.UploadOutputArtifactRequest(end=pb.UploadOutputArtifactEnd()),
            )

            def upload(messages=messages):
                return self.artifact_stub.UploadOutputArtifact(
                    iter(messages), metadata=self.metadata, timeout=TRANSFER_TIMEOUT_SECONDS
                )

            try:
                self.retrying("UploadOutputArtifact", upload)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE:
                    raise  # retried for JOB_RETRY_SECONDS: the job is given up
                raise ArtifactFailed(f"output artifact {artifact.name}", err) from err
            log.info("%s: job %s: wrote output artifact %s (%d bytes)", self.name, job_id, artifact.name, len(body))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    worker = Worker()
    # A signal handler runs on the main thread between two bytecodes, possibly inside
    # `Event.wait` while it holds the event's lock: calling `stop()` there (which sets that event)
    # could deadlock. The handler only puts to a SimpleQueue, which is safe there; a thread of
    # its own stops the worker.
    signalled: queue.SimpleQueue = queue.SimpleQueue()

    def stop_when_signalled() -> None:
        signalled.get()
        worker.stop()

    threading.Thread(target=stop_when_signalled, name="signals", daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: signalled.put(None))
    try:
        return worker.run()
    finally:
        worker.tracing.shutdown()


if __name__ == "__main__":
    sys.exit(main())
