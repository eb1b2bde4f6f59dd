"""OpenTelemetry end to end: the Python worker (tracing on) does one job through the gateway, both
export over OTLP/gRPC to a real receiver, and the receiver holds one trace for the job: the
worker's poll and job spans and its client spans, the gateway's server span for each call under
the worker's client span, and the gateway's upstream client span under each server span. On the
in-process emulator and on the real AWS SDK path (whose upstream spans carry the AWS request id
and the attempts), for a custom and a third-party action. No span holds a nonce, a credential, an
action configuration value or a token. A gateway without --otlp-endpoint sends nothing, and a
worker without OTEL_EXPORTER_OTLP_ENDPOINT needs no OpenTelemetry package at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from otlp_receiver import CLIENT, INTERNAL, SERVER, OtlpReceiver
from gateway_process import DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN, EMULATOR_SECRET_ACCESS_KEY
from traces_support import ADMIN_TOKEN, WORKER_TOKEN
from workers_support import wait_until

GATEWAY = "codepipeline-gateway"
WORKER = "codepipeline-worker-python"
JOB_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class Action:
    """A custom or a third-party action: how the worker is set up for it, and the calls one
    successful job makes, in order."""

    owner: str
    provider: str
    service: str
    calls: tuple[str, ...]  # the poll first

    @property
    def poll(self) -> str:
        return self.calls[0]


CUSTOM = Action(
    "Custom", "DemoBuilder", "codepipeline.jobworker.v1.JobWorkerService",
    ("PollForJobs", "AcknowledgeJob", "GetJobDetails", "PutJobSuccessResult"),
)  # fmt: skip
THIRD_PARTY = Action(
    "ThirdParty", "DemoPartner", "codepipeline.jobworker.v1.ThirdPartyJobWorkerService",
    ("PollForThirdPartyJobs", "GetThirdPartyJobDetails", "AcknowledgeThirdPartyJob", "PutThirdPartyJobSuccessResult"),
)  # fmt: skip
ACTIONS = pytest.mark.parametrize("action", [CUSTOM, THIRD_PARTY], ids=["custom", "third-party"])


def create_job(pb, emulator, action: Action, configuration: dict[str, str]) -> str:
    jw = pb.jobworker
    owner = jw.ACTION_OWNER_CUSTOM if action is CUSTOM else jw.ACTION_OWNER_THIRD_PARTY
    action_type = jw.ActionTypeId(category=jw.ACTION_CATEGORY_BUILD, owner=owner, provider=action.provider, version="1")
    client = {"client_id": DEMO_CLIENT_ID, "client_token": DEMO_CLIENT_TOKEN} if action is THIRD_PARTY else {}
    request = pb.admin.CreateJobRequest(action_type_id=action_type, configuration=configuration, **client)
    return emulator.stub.CreateJob(request, timeout=10).job_id


def run_one_traced_job(
    pb, emulator, start_worker, otlp: OtlpReceiver, action: Action, gateway_address: str, **settings: object
):
    """Creates a job (with a secret in its configuration), lets the traced Python worker do it,
    and stops the worker (which exports its last spans as it exits). Returns the job id, the
    configuration secret and the worker."""
    secret_setting = f"config-secret-{uuid.uuid4()}"
    job_id = create_job(pb, emulator, action, {"Outcome": "succeed", "WorkMillis": "20", "DeployKey": secret_setting})
    worker = start_worker(
        f"python-traced-{action.owner.lower()}",
        GATEWAY_ADDRESS=gateway_address,
        ACTION_OWNER=action.owner,
        ACTION_PROVIDER=action.provider,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY=100,
        **settings,
    )  # fmt: skip
    wait_until(
        lambda: (job_id, "succeeded") in worker.reported(), JOB_TIMEOUT_SECONDS, "the job's result",
        explain=worker.output,
    )  # fmt: skip
    assert worker.stop() == 0, worker.output()
    assert DEMO_CLIENT_TOKEN not in worker.output() and WORKER_TOKEN not in worker.output()
    return job_id, secret_setting, worker


def the_jobs_trace(otlp: OtlpReceiver, job_id: str) -> list:
    jobs = [
        span for span in otlp.spans(WORKER) if span.name == "job" and span.attributes.get("codepipeline.job_id") == job_id
    ]
    assert len(jobs) == 1, f"expected one job span for {job_id}: {otlp.spans(WORKER)}"
    return [span for span in otlp.spans() if span.trace_id == jobs[0].trace_id]


def check_the_jobs_trace(otlp: OtlpReceiver, job_id: str, action: Action, *, sdk: bool) -> None:
    trace = the_jobs_trace(otlp, job_id)
    explain = "\n".join(map(repr, trace))
    by_id = {span.span_id: span for span in trace}
    assert {span.service for span in trace} == {WORKER, GATEWAY}, explain

    # One tree: the worker's poll span is the only root, every other span's parent is in the trace.
    [root] = [span for span in trace if not span.parent_id]
    assert (root.service, root.name, root.kind) == (WORKER, "poll", INTERNAL), explain
    assert root.attributes["codepipeline.jobs"] == 1
    assert root.attributes["codepipeline.action_type"] == f"Build/{action.owner}/{action.provider}/1"
    assert all(span.parent_id in by_id for span in trace if span is not root), explain
    [job] = [span for span in trace if span.name == "job"]
    assert job.parent_id == root.span_id
    assert job.attributes["codepipeline.job.result"] == "succeeded"

    # The gateway's server spans: one per call, each under the worker's client span for it, the
    # poll's under the poll span and the job's calls under the job span.
    servers = sorted((span for span in trace if span.service == GATEWAY and span.kind == SERVER), key=start)
    assert [span.attributes["rpc.method"] for span in servers] == list(action.calls), explain
    for server in servers:
        method = server.attributes["rpc.method"]
        assert server.name == f"{action.service}/{method}"
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == action.service
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert isinstance(server.attributes["latency_us"], int), server  # an int, not a string
        assert server.attributes["client_id"] == "python-worker"  # the token file's id of the worker's token
        caller = by_id[server.parent_id]
        assert (caller.service, caller.kind, caller.name) == (WORKER, CLIENT, f"/{action.service}/{method}"), explain
        assert caller.parent_id == (root if method == action.poll else job).span_id, explain

        # Under each, the one upstream call it made, named after the operation.
        [upstream] = [span for span in trace if span.parent_id == server.span_id]
        assert (upstream.service, upstream.kind, upstream.name) == (GATEWAY, CLIENT, method), explain
        attributes = upstream.attributes
        assert attributes["rpc.system"] == "aws-api"
        assert attributes["rpc.service"] == "CodePipeline"
        assert attributes["rpc.method"] == method
        assert attributes["outcome"] == "success"
        if sdk:
            assert attributes.get("aws_request_id"), upstream
            assert isinstance(attributes.get("attempts"), int) and attributes["attempts"] >= 1, upstream
            assert server.attributes.get("aws_request_id") == attributes["aws_request_id"], server
    assert all(span.resource.get("service.name") == GATEWAY for span in trace if span.service == GATEWAY)

    # Nothing else the gateway did was about this job: its calls are all in this trace.
    job_calls = set(action.calls[1:])
    elsewhere = [
        span for span in otlp.spans(GATEWAY)
        if span.kind == SERVER and span.attributes.get("rpc.method") in job_calls and span.trace_id != root.trace_id
    ]  # fmt: skip
    assert not elsewhere, elsewhere


def start(span) -> int:
    return span.span.start_time_unix_nano


def check_no_secret_in_any_span(otlp: OtlpReceiver, worker, *known: str) -> None:
    handed = worker.secrets()
    for field in ("nonce", "secret_access_key", "session_token"):
        assert handed.get(field), f"the recorder saw no {field}: the check proves nothing ({handed.keys()})"
    secrets = {*known, *(value for values in handed.values() for value in values)}
    leaks = [
        (span, where, secret)
        for span in otlp.spans()
        for where, value in span.every_value()
        for secret in secrets
        if secret in str(value)
    ]
    assert not leaks, "\n".join(f"{where} of {span!r} holds {secret!r}" for span, where, secret in leaks)


@ACTIONS
def test_one_job_is_one_trace_from_the_workers_poll_through_the_gateway_to_the_emulator(
    action, pb, otlp, emulator_gateway, admin, start_worker
):
    gateway = emulator_gateway(
        "--otlp-endpoint", otlp.endpoint, "--client-token-file", "examples/client-tokens.toml"
    )
    job_id, secret_setting, worker = run_one_traced_job(
        pb, admin(gateway.address), start_worker, otlp, action, gateway.address
    )
    gateway.stop()  # exports its last spans as it exits

    check_the_jobs_trace(otlp, job_id, action, sdk=False)
    check_no_secret_in_any_span(otlp, worker, secret_setting, WORKER_TOKEN, ADMIN_TOKEN, DEMO_CLIENT_TOKEN)


@ACTIONS
def test_on_the_aws_sdk_path_the_upstream_spans_carry_the_aws_request_id_and_attempts(
    action, pb, otlp, sdk_gateway, admin, start_worker
):
    gateway, emulator_address = sdk_gateway(
        "--otlp-endpoint", otlp.endpoint, "--client-token-file", "examples/client-tokens.toml"
    )
    job_id, secret_setting, worker = run_one_traced_job(
        pb, admin(emulator_address, authenticated=False), start_worker, otlp, action, gateway.address
    )
    gateway.stop()

    check_the_jobs_trace(otlp, job_id, action, sdk=True)
    check_no_secret_in_any_span(
        otlp, worker, secret_setting, WORKER_TOKEN, ADMIN_TOKEN, DEMO_CLIENT_TOKEN, EMULATOR_SECRET_ACCESS_KEY
    )


def test_in_stream_mode_each_job_is_a_trace_of_its_own(pb, otlp, emulator_gateway, admin, start_worker):
    gateway = emulator_gateway("--otlp-endpoint", otlp.endpoint)
    job_id, _, worker = run_one_traced_job(
        pb, admin(gateway.address), start_worker, otlp, CUSTOM, gateway.address, GATEWAY_MODE="stream"
    )
    gateway.stop()

    # The job arrived on the stream and was acknowledged on it: its trace starts at the job span
    # and holds the two unary calls the worker made for it, each through the gateway upstream.
    trace = the_jobs_trace(otlp, job_id)
    by_id = {span.span_id: span for span in trace}
    [root] = [span for span in trace if not span.parent_id]
    assert (root.service, root.name) == (WORKER, "job"), trace
    servers = sorted((span for span in trace if span.service == GATEWAY and span.kind == SERVER), key=start)
    assert [span.attributes["rpc.method"] for span in servers] == ["GetJobDetails", "PutJobSuccessResult"], trace
    for server in servers:
        assert by_id[by_id[server.parent_id].parent_id] is root
        assert [span.name for span in trace if span.parent_id == server.span_id] == [server.attributes["rpc.method"]]

    # The stream itself: the gateway's server span under the worker's client span for it.
    [stream] = [span for span in otlp.spans(GATEWAY) if span.attributes.get("rpc.method") == "StreamJobs"]
    caller = {span.span_id: span for span in otlp.spans(WORKER)}[stream.parent_id]
    assert (caller.kind, caller.name) == (CLIENT, f"/{CUSTOM.service}/StreamJobs")
    assert stream.attributes["rpc.grpc.status_code"] == 0


def test_a_gateway_without_an_otlp_endpoint_sends_nothing(pb, otlp, emulator_gateway, admin, start_worker):
    gateway = emulator_gateway()
    job_id, _, _ = run_one_traced_job(pb, admin(gateway.address), start_worker, otlp, CUSTOM, gateway.address)
    gateway.stop()

    # The worker's spans arrived, with client spans whose traceparent went to the gateway...
    calls = [span for span in otlp.spans(WORKER) if span.kind == CLIENT]
    assert {span.attributes["rpc.method"] for span in calls} >= set(CUSTOM.calls), calls
    assert [span for span in the_jobs_trace(otlp, job_id) if span.name == "job"]
    # ...and the gateway sent nothing.
    assert {span.service for span in otlp.spans()} == {WORKER}, otlp.spans()


def test_the_worker_needs_no_opentelemetry_package_without_an_otlp_endpoint(
    pb, tmp_path, otlp, emulator_gateway, admin, start_worker, python_worker_path
):
    # An `opentelemetry` that cannot be imported, ahead of the real one on the path.
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("opentelemetry is not installed here")\n')
    path = f"{shadow.parent}:{python_worker_path}"
    gateway = emulator_gateway("--otlp-endpoint", otlp.endpoint)
    emulator = admin(gateway.address)

    job_id = create_job(pb, emulator, CUSTOM, {"Outcome": "succeed"})
    worker = start_worker("python-untraced", GATEWAY_ADDRESS=gateway.address, PYTHONPATH=path)
    wait_until(lambda: (job_id, "succeeded") in worker.reported(), JOB_TIMEOUT_SECONDS, "the job", explain=worker.output)
    assert worker.stop() == 0, worker.output()

    # With the endpoint set, the same worker does need it: the shadow works.
    traced = start_worker(
        "python-traced", GATEWAY_ADDRESS=gateway.address, PYTHONPATH=path, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint
    )
    assert traced.process.wait(timeout=20) != 0, traced.output()
    assert "opentelemetry is not installed here" in traced.output()

    # The untraced worker sent no traceparent: the gateway's spans for its calls are roots.
    gateway.stop()
    assert not otlp.spans(WORKER)
    servers = [span for span in otlp.spans(GATEWAY) if span.kind == SERVER and span.attributes.get("client_id")]
    assert {span.attributes["rpc.method"] for span in servers} >= set(CUSTOM.calls), servers
    assert all(not span.parent_id for span in servers if span.attributes["client_id"] == "python-worker"), servers


def test_a_callers_decision_not_to_sample_is_followed(pb, otlp, emulator_gateway, admin, start_worker):
    gateway = emulator_gateway("--otlp-endpoint", otlp.endpoint)
    run_one_traced_job(
        pb, admin(gateway.address), start_worker, otlp, CUSTOM, gateway.address, OTEL_TRACES_SAMPLER="always_off"
    )
    gateway.stop()

    # The worker sent traceparents flagged "not sampled": none of its calls made a span. (The
    # test's own admin calls, with no traceparent, were sampled by the gateway: it exports.)
    assert not otlp.spans(WORKER)
    admin_calls = [span for span in otlp.spans(GATEWAY) if span.kind == SERVER]
    assert admin_calls and {span.attributes.get("client_id") for span in admin_calls} == {"admin"}, admin_calls

