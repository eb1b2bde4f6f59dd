"""Each example worker against a scripted stand-in for the gateway, whose answers the test decides:
proves, without timing luck, that a worker honours RetryInfo, backs off without it, drops a job on
ABORTED, sends its bearer token, asks for no more jobs than it has free slots, and on SIGTERM
finishes the job in hand and polls no more. In stream mode (StreamJobs), the same on the stream:
acknowledgements retried after RetryInfo, an ABORTED job dropped with its credit given back, credit
for free slots only (none for a job held from a stream that ended), the stream reopened after its
RetryInfo, and on SIGTERM the stream closed and the job in hand finished.

And each worker against the real gateway over TLS, trusting the CA named by GATEWAY_TLS_CA.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from workers_support import LANGUAGES, WORKER_READY, Emulator, alternating_modes, wait_until

JOB_A = "aaaaaaaa-0000-4000-8000-000000000001"
JOB_B = "bbbbbbbb-0000-4000-8000-000000000002"
JOB_C = "cccccccc-0000-4000-8000-000000000003"
TOKEN = "scripted-token-0123456789"


def rich_error(code: int, message: str, *details) -> grpc.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


class ScriptedStream:
    """One StreamJobs call on the scripted gateway: what the worker sent on it, and when; the test
    answers with send() and ends it with end(). The worker closing its side ends it with OK."""

    def __init__(self, metadata: dict) -> None:
        self.opened_at = time.monotonic()
        self.metadata = metadata
        self.received: list[tuple[float, object]] = []  # (when, StreamJobsRequest)
        self.closed_at: float | None = None  # when the worker closed its side
        self.outgoing: queue.Queue = queue.Queue()

    def read(self, requests) -> None:
        try:
            for request in requests:
                self.received.append((time.monotonic(), request))
            self.closed_at = time.monotonic()
        except grpc.RpcError:
            pass  # the call ended first
        self.outgoing.put(None)

    def sent(self, kind: str) -> list[tuple[float, object]]:
        """(when, message) for each `subscription`, `credit` or `acknowledge` the worker sent."""
        return [(at, getattr(request, kind)) for at, request in self.received if request.WhichOneof("request") == kind]

    def acknowledged_at(self, job_id: str) -> list[float]:
        return [at for at, ack in self.sent("acknowledge") if ack.job_id == job_id]

    def send(self, **response) -> None:
        self.outgoing.put(response)

    def end(self, status: grpc.Status) -> None:
        self.outgoing.put(status)


class ScriptedGateway:
    """A JobWorkerService whose answers are scripted per RPC (and per job): each script entry is
    a response or a grpc.Status to fail with; the last entry repeats. Records every call. Its
    StreamJobs calls are ScriptedStreams, in `streams`, which the test drives."""

    def __init__(self, pb, scripts: dict, details: dict) -> None:
        self.pb = pb
        self.scripts = {key: list(entries) for key, entries in scripts.items()}
        self.details = details  # job id -> configuration
        self.calls: list[tuple[float, str, object, dict]] = []
        self.streams: list[ScriptedStream] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers([self._handlers()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handlers(self):
        jw = self.pb.jobworker

        def handler(rpc, request_type, response_for):
            def handle(request, context):
                with self.lock:
                    self.calls.append((time.monotonic(), rpc, request, dict(context.invocation_metadata())))
                answer = response_for(request)
                if isinstance(answer, grpc.Status):
                    context.abort_with_status(answer)
                return answer

            return grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=request_type.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )

        def next_answer(key):
            with self.lock:
                entries = self.scripts.get(key)
                if not entries:
                    return None
                return entries.pop(0) if len(entries) > 1 else entries[0]

        def stream_jobs(requests, context):
            stream = ScriptedStream(dict(context.invocation_metadata()))
            with self.lock:
                self.streams.append(stream)
            threading.Thread(target=stream.read, args=(requests,), daemon=True).start()
            while context.is_active():
                try:
                    answer = stream.outgoing.get(timeout=0.1)
                except queue.Empty:
                    continue
                if answer is None:
                    return
                if isinstance(answer, grpc.Status):
                    context.abort_with_status(answer)
                yield jw.StreamJobsResponse(**answer)

        def job_details(request):
            configuration = self.details[request.job_id]
            return jw.GetJobDetailsResponse(
                job_details=jw.JobDetails(
                    id=request.job_id,
                    account_id="123456789012",
                    data=jw.JobData(action_configuration=jw.ActionConfiguration(configuration=configuration)),
                )
            )

        return grpc.method_handlers_generic_handler(
            "codepipeline.jobworker.v1.JobWorkerService",
            {
                "PollForJobs": handler("PollForJobs", jw.PollForJobsRequest, lambda r: next_answer("PollForJobs")),
                "AcknowledgeJob": handler(
                    "AcknowledgeJob",
                    jw.AcknowledgeJobRequest,
                    lambda r: (
                        next_answer(("AcknowledgeJob", r.job_id))
                        or jw.AcknowledgeJobResponse(status=jw.JOB_STATUS_IN_PROGRESS)
                    ),
                ),
                "GetJobDetails": handler("GetJobDetails", jw.GetJobDetailsRequest, job_details),
                "PutJobSuccessResult": handler(
                    "PutJobSuccessResult", jw.PutJobSuccessResultRequest, lambda r: jw.PutJobSuccessResultResponse()
                ),
                "PutJobFailureResult": handler(
                    "PutJobFailureResult", jw.PutJobFailureResultRequest, lambda r: jw.PutJobFailureResultResponse()
                ),
                "StreamJobs": grpc.stream_stream_rpc_method_handler(
                    stream_jobs,
                    request_deserializer=jw.StreamJobsRequest.FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                ),
            },
        )

    def calls_of(self, rpc: str, job_id: str | None = None) -> list[tuple[float, object, dict]]:
        with self.lock:
            return [
                (at, request, metadata)
                for at, name, request, metadata in self.calls
                if name == rpc and (job_id is None or getattr(request, "job_id", None) == job_id)
            ]

    def stream(self, index: int) -> ScriptedStream | None:
        """The index-th StreamJobs call, once it has been opened."""
        with self.lock:
            return self.streams[index] if len(self.streams) > index else None

    def stop(self) -> None:
        self.server.stop(grace=0)


@pytest.fixture
def scripted(pb):
    started = []

    def start(scripts: dict, details: dict) -> ScriptedGateway:
        gateway = ScriptedGateway(pb, scripts, details)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def job(pb, job_id: str):
    return pb.jobworker.Job(id=job_id, nonce=f"nonce-{job_id[:8]}", account_id="123456789012")


@pytest.mark.parametrize("language", LANGUAGES)
def test_worker_honours_retry_info_backs_off_drops_aborted_jobs_and_sends_its_token(
    language, pb, scripted, start_worker
):
    jw = pb.jobworker
    gateway = scripted(
        {
            "PollForJobs": [
                rich_error(code_pb2.RESOURCE_EXHAUSTED, "rate limit reached", retry_info(0.6)),
                rich_error(code_pb2.UNAVAILABLE, "connection reset"),  # no RetryInfo: own backoff
                jw.PollForJobsResponse(jobs=[job(pb, JOB_A), job(pb, JOB_B)]),
                jw.PollForJobsResponse(),
            ],
            ("AcknowledgeJob", JOB_A): [
                rich_error(code_pb2.UNAVAILABLE, "CodePipeline is throttling", retry_info(0.4)),
                jw.AcknowledgeJobResponse(status=jw.JOB_STATUS_IN_PROGRESS),
            ],
            ("AcknowledgeJob", JOB_B): [
                rich_error(
                    code_pb2.ABORTED,
                    "another worker holds this job",
                    error_details_pb2.ErrorInfo(reason="InvalidNonceException", domain="codepipeline.amazonaws.com"),
                )
            ],
        },
        details={JOB_A: {"Outcome": "continue"}, JOB_B: {}},
    )
    name = f"{language}-scripted"
    worker = start_worker(
        language,
        name,
        GATEWAY_MODE="poll",
        GATEWAY_ADDRESS=gateway.address,
        GATEWAY_TOKEN=TOKEN,
        MAX_IN_FLIGHT=2,
        POLL_INTERVAL=0.2,
    )  # fmt: skip
    wait_until(lambda: gateway.calls_of("PutJobSuccessResult"), 20, "the result of job A", explain=worker.output)
    wait_until(lambda: len(gateway.calls_of("PollForJobs")) >= 5, 10, "polls after the job", explain=worker.output)
    assert worker.stop() == 0, worker.output()

    # The token travels with every call.
    assert {metadata.get("authorization") for _, _, _, metadata in gateway.calls} == {f"Bearer {TOKEN}"}

    polls = gateway.calls_of("PollForJobs")
    # RESOURCE_EXHAUSTED with RetryInfo 0.6 s: the next poll waited that long.
    assert polls[1][0] - polls[0][0] >= 0.55, worker.output()
    # UNAVAILABLE without RetryInfo: a short jittered backoff (the first step is at most 0.2 s).
    assert polls[2][0] - polls[1][0] < 0.6, worker.output()
    # Each poll asks for as many jobs as there are free slots: 2 at first; never more than 2.
    assert polls[0][1].max_batch_size == 2
    assert all(1 <= request.max_batch_size <= 2 for _, request, _ in polls)
    assert polls[0][1].action_type_id == jw.ActionTypeId(
        category=jw.ACTION_CATEGORY_BUILD, owner=jw.ACTION_OWNER_CUSTOM, provider="DemoBuilder", version="1"
    )

    # UNAVAILABLE with RetryInfo 0.4 s on AcknowledgeJob: retried after that long, same nonce.
    acks = gateway.calls_of("AcknowledgeJob", JOB_A)
    assert len(acks) == 2 and acks[1][0] - acks[0][0] >= 0.35, worker.output()
    assert acks[1][1].nonce == "nonce-aaaaaaaa"

    # ABORTED: job B was dropped after one try; nothing more was said about it.
    assert len(gateway.calls_of("AcknowledgeJob", JOB_B)) == 1
    assert f"{JOB_B} is held by another worker; dropped" in worker.output()
    assert not gateway.calls_of("GetJobDetails", JOB_B)
    assert not gateway.calls_of("PutJobSuccessResult", JOB_B) and not gateway.calls_of("PutJobFailureResult")

    # Job A asked to continue: one success with a continuation token and execution details.
    [(_, result, _)] = gateway.calls_of("PutJobSuccessResult")
    assert result.job_id == JOB_A
    assert result.continuation_token == "continued"
    assert result.execution_details.external_execution_id == f"{name}:{JOB_A}"
    assert result.execution_details.summary
    assert not result.output_variables


@pytest.mark.parametrize("language", LANGUAGES)
def test_worker_on_sigterm_finishes_the_job_in_hand_and_polls_no_more(language, pb, scripted, start_worker):
    jw = pb.jobworker
    gateway = scripted(
        {"PollForJobs": [jw.PollForJobsResponse(jobs=[job(pb, JOB_C)]), jw.PollForJobsResponse()]},
        details={JOB_C: {"Outcome": "fail", "WorkMillis": "1500"}},
    )
    worker = start_worker(
        language, f"{language}-draining", GATEWAY_MODE="poll", GATEWAY_ADDRESS=gateway.address, POLL_INTERVAL=0.1
    )
    wait_until(lambda: gateway.calls_of("GetJobDetails", JOB_C), 20, "the job's details", explain=worker.output)
    sigterm_at = time.monotonic()
    assert worker.stop() == 0, worker.output()

    [(reported_at, failure, _)] = gateway.calls_of("PutJobFailureResult", JOB_C)
    assert reported_at > sigterm_at, "the job was reported before SIGTERM: the test proves nothing"
    assert failure.failure_details.type == jw.FAILURE_TYPE_JOB_FAILED
    assert failure.failure_details.message
    assert failure.failure_details.external_execution_id == f"{language}-draining:{JOB_C}"
    late_polls = [at for at, _, _ in gateway.calls_of("PollForJobs") if at > sigterm_at + 1.0]
    assert not late_polls, f"{len(late_polls)} polls after SIGTERM\n{worker.output()}"


def status_proto(code: int, message: str, *details) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


@pytest.mark.parametrize("language", LANGUAGES)
def test_worker_in_stream_mode_acknowledges_on_the_stream_gives_credit_for_free_slots_and_reopens(
    language, pb, scripted, start_worker
):
    jw = pb.jobworker
    gateway = scripted(
        {},
        details={
            JOB_A: {"Outcome": "continue", "WorkMillis": "700"},
            JOB_B: {},
            JOB_C: {"Outcome": "fail", "WorkMillis": "500"},
        },
    )
    name = f"{language}-streaming"
    worker = start_worker(
        language, name, GATEWAY_MODE="stream", GATEWAY_ADDRESS=gateway.address, GATEWAY_TOKEN=TOKEN, MAX_IN_FLIGHT=2
    )
    first = wait_until(lambda: gateway.stream(0), 20, "the worker's stream", explain=worker.output)

    # The first message subscribes, with credit for every slot; the token travels with the stream.
    [(_, subscription)] = wait_until(lambda: first.sent("subscription"), 5, "the subscription", explain=worker.output)
    assert subscription.max_outstanding_jobs == 2
    assert subscription.action_type_id == jw.ActionTypeId(
        category=jw.ACTION_CATEGORY_BUILD, owner=jw.ACTION_OWNER_CUSTOM, provider="DemoBuilder", version="1"
    )
    assert first.metadata.get("authorization") == f"Bearer {TOKEN}"

    # Two jobs delivered: each is acknowledged on the stream at once.
    first.send(job=job(pb, JOB_A))
    first.send(job=job(pb, JOB_B))
    wait_until(
        lambda: first.acknowledged_at(JOB_A) and first.acknowledged_at(JOB_B), 5, "both acknowledgements",
        explain=worker.output,
    )  # fmt: skip

    # A: UNAVAILABLE with RetryInfo 0.3 s, so acknowledged again after that long. B: ABORTED, so
    # dropped, and its credit given back. A delivered again meanwhile (as after its lease ended):
    # the same job, acknowledged once more only, its credit given back.
    throttled = status_proto(code_pb2.UNAVAILABLE, "CodePipeline is throttling", retry_info(0.3))
    aborted = status_proto(code_pb2.ABORTED, "the lease ended", error_details_pb2.ErrorInfo(reason="LEASE_ENDED"))
    answered_at = time.monotonic()
    first.send(acknowledged=jw.StreamJobsAcknowledged(job_id=JOB_A, error=throttled))
    first.send(acknowledged=jw.StreamJobsAcknowledged(job_id=JOB_B, error=aborted))
    first.send(job=job(pb, JOB_A))
    wait_until(lambda: len(first.acknowledged_at(JOB_A)) == 2, 5, "A acknowledged again", explain=worker.output)
    assert first.acknowledged_at(JOB_A)[1] - answered_at >= 0.25, worker.output()
    wait_until(lambda: len(first.sent("credit")) == 2, 5, "B's and A's credit back", explain=worker.output)
    first.send(acknowledged=jw.StreamJobsAcknowledged(job_id=JOB_A, status=jw.JOB_STATUS_IN_PROGRESS))
    wait_until(lambda: gateway.calls_of("GetJobDetails", JOB_A), 5, "A's details", explain=worker.output)

    # The gateway drains while A is in hand: the worker reopens after the RetryInfo delay.
    draining = rich_error(
        code_pb2.UNAVAILABLE, "the gateway is shutting down", error_details_pb2.ErrorInfo(reason="DRAINING"),
        retry_info(0.25),
    )  # fmt: skip
    first.end(draining)
    ended_at = time.monotonic()
    second = wait_until(lambda: gateway.stream(1), 10, "the stream reopened", explain=worker.output)
    assert second.opened_at - ended_at >= 0.2, worker.output()
    [(_, subscription)] = wait_until(lambda: second.sent("subscription"), 5, "the new subscription")
    assert subscription.max_outstanding_jobs == 2

    # A, held from the first stream, is finished on (its slot was counted in the new stream's first
    # credit, so finishing it gives none: see below).
    [(finished_at, _, _)] = wait_until(
        lambda: gateway.calls_of("PutJobSuccessResult", JOB_A), 10, "A's result", explain=worker.output
    )
    assert finished_at > second.opened_at, "A was done before the stream reopened: the test proves nothing"

    # C on the new stream; SIGTERM while it is worked on: the worker closes the stream at once,
    # finishes C, exits 0, and opens no other stream.
    second.send(job=job(pb, JOB_C))
    wait_until(lambda: second.acknowledged_at(JOB_C), 5, "C's acknowledgement", explain=worker.output)
    second.send(acknowledged=jw.StreamJobsAcknowledged(job_id=JOB_C, status=jw.JOB_STATUS_IN_PROGRESS))
    wait_until(lambda: gateway.calls_of("GetJobDetails", JOB_C), 5, "C's details", explain=worker.output)
    sigterm_at = time.monotonic()
    assert worker.stop() == 0, worker.output()
    assert second.closed_at is not None and second.closed_at - sigterm_at < 1.0, worker.output()
    [(reported_at, failure, _)] = gateway.calls_of("PutJobFailureResult", JOB_C)
    assert reported_at > sigterm_at, "C was reported before SIGTERM: the test proves nothing"
    assert failure.failure_details.external_execution_id == f"{name}:{JOB_C}"
    assert len(gateway.streams) == 2, worker.output()

    # Credit: 1 for B and 1 for A's second delivery on the first stream; none on the second, whose
    # first credit covered A's slot and which was closed before C was done. A acknowledged twice.
    assert [credit.jobs for _, credit in first.sent("credit")] == [1, 1], worker.output()
    assert len(first.acknowledged_at(JOB_A)) == 2, worker.output()
    assert not second.sent("credit"), worker.output()

    # No unary acknowledgement or poll; B dropped after one try, nothing more said about it;
    # A continued with its token.
    assert not gateway.calls_of("AcknowledgeJob") and not gateway.calls_of("PollForJobs")
    assert len(first.acknowledged_at(JOB_B)) == 1 and not gateway.calls_of("GetJobDetails", JOB_B)
    assert f"{JOB_B} is held by another worker; dropped" in worker.output()
    [(_, result, metadata)] = gateway.calls_of("PutJobSuccessResult")
    assert (result.job_id, result.continuation_token) == (JOB_A, "continued")
    assert result.execution_details.external_execution_id == f"{name}:{JOB_A}"
    assert metadata.get("authorization") == f"Bearer {TOKEN}"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA and a server certificate it signed for localhost and 127.0.0.1 (openssl, P-256)."""
    directory = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=worker test CA")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return directory


def test_the_workers_trust_the_gateway_ca_named_by_gateway_tls_ca(pb, tls_files, start_gateway, start_worker):
    gateway = start_gateway("--tls-cert", str(tls_files / "server.pem"), "--tls-key", str(tls_files / "server.key"))
    credentials = grpc.ssl_channel_credentials((tls_files / "ca.pem").read_bytes())
    with grpc.secure_channel(gateway.address, credentials) as channel:
        emulator = Emulator(pb, channel)
        job_ids = [emulator.create_job(Outcome="succeed") for _ in range(6)]
        workers = [
            start_worker(
                language,
                f"{language}-{mode}-tls",
                GATEWAY_MODE=mode,
                GATEWAY_ADDRESS=gateway.address,
                GATEWAY_TLS_CA=tls_files / "ca.pem",
                MAX_IN_FLIGHT=1,
                POLL_INTERVAL=0.2,
            )  # fmt: skip
            for language, mode in alternating_modes(1).items()
        ]
        for worker in workers:
            worker.wait_for(WORKER_READY)
        wait_until(
            lambda: all(emulator.job(job_id).result_count == 1 for job_id in job_ids), 30, "the jobs over TLS",
            explain=lambda: "\n".join(worker.output() for worker in workers),
        )  # fmt: skip
    for worker in workers:
        assert worker.stop() == 0, worker.output()
        assert "retrying" not in worker.output(), worker.output()

    # A worker that does not trust the gateway's CA gets nowhere.
    with grpc.secure_channel(gateway.address, grpc.ssl_channel_credentials()) as untrusted:
        with pytest.raises(grpc.RpcError) as refused:
            pb.jobworker_grpc.JobWorkerServiceStub(untrusted).GetJobDetails(
                pb.jobworker.GetJobDetailsRequest(job_id=JOB_A), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
