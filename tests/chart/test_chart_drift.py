"""No drift between the chart and the binary it deploys.

Each value set is rendered, and the gateway container is started the way the kubelet would start
it: the real binary with the rendered command arguments and environment (envFrom ConfigMap +
env), and the Secrets it mounts written to a temporary directory standing in for the mount
paths. Then:

- every CPGW_* variable the chart sets is one `codepipeline-gateway serve --help` lists (clap
  ignores unknown variables, so starting the binary alone would not catch a misspelt one);
- the process reports `grpc listening on` the address of CPGW_LISTEN, answers grpc.health.v1
  SERVING on the port the probes use (over TLS, with a client certificate, where the chart says
  so), and serves Prometheus text on the metrics port, which names the rate-limit backend the
  chart chose (and, for Redis, reports it up: the URL from the Secret, the password and CA from
  the mounted files reached a real redis-server);
- token files the chart writes (or mounts) authenticate callers, on the real SDK path to the
  emulator's AWS wire-protocol front, and the emulator mode serves its demo jobs;
- the client-token file mounted from thirdParty.clientTokens is loaded (its clients counted on
  the metrics port), re-read when the Secret changes, and its tokens reach CodePipeline (the
  emulator's front) in third-party calls that carry none: on any pod when the worker names the
  client, only on the polling pod when it does not;
- two pods of a Redis value set share a client's rate limit, under the key prefix the chart
  sets, and when Redis goes away they fail open (or closed, where the values say so);
- the tracing value set exports its calls to an OTLP/gRPC receiver (opentelemetry-proto's
  TraceService): a call is a server span with the CodePipeline call a client span under it, the
  resource is the service name and attributes the chart set (the pod's and node's names expanded
  by the rules of the kubelet), the sampling ratio holds while a caller's sampled flag is
  followed, and an https:// endpoint, which the schema refuses, is one the binary refuses too;
- on SIGTERM the gateway goes NOT_SERVING while still accepting connections, then exits within
  the rendered terminationGracePeriodSeconds.

The only changes made to the rendered container: its listeners bind 127.0.0.1 on free ports
(rendered with server.grpcPort / server.metricsPort set to them, so probes, containerPorts and
CPGW_LISTEN still come from the chart), mount paths point into the temporary directory, a
`redis.url` is rendered with the address of the checks' redis-server in place of its host and port
(a URL from an existing Secret is the one the checks put there), a `tracing.otlpEndpoint` is
rendered with the address of the checks' OTLP receiver, the downward API's pod and node names are
the checks' own, and the AWS identity that IRSA or Pod Identity would inject is the emulator's
static key (instance metadata is disabled so nothing leaves the machine).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from chart_support import (
    CHART_DIR,
    GATEWAY_BIN,
    NAMESPACE,
    POLL_METHOD,
    DEMO_POLL,
    REPO_ROOT,
    VALUE_SETS,
    Gateway,
    OtlpReceiver,
    PodIdentity,
    Process,
    RedisServer,
    base_environment,
    listen_port,
    load_value_set,
    render_value_set,
    serve_defaults,
    serve_env_names,
    serve_flags,
    start,
    start_serving,
)
from conftest import (
    CLIENT_ID,
    DEMO_PARTNER_CLIENT_ID,
    EXISTING_SECRET_TOKEN,
    PARTNER_CLIENT_TOKENS,
    client_token_file,
    redis_secrets,
)

sys.path.insert(0, str(REPO_ROOT / "scripts"))
chart_readme = importlib.import_module("chart-readme")

# Value sets whose container must come up; `defaults` must refuse to (no authentication).
SERVING_SETS = [name for name in VALUE_SETS if name != "defaults"]
# Tokens of the value sets that authenticate with a token file (see their header comments).
TOKENS = {
    "tokens": "python-workers-token",
    "tls": "python-workers-token",
    "hpa-pdb": "python-workers-token",
    "servicemonitor": "python-workers-token",
    "existing-secret": EXISTING_SECRET_TOKEN,
    "redis": "python-workers-token",
    "redis-existing-secret": EXISTING_SECRET_TOKEN,
    "tracing": "python-workers-token",
}
# The third-party value set's worker token, and its service.
PARTNER_WORKERS_TOKEN = "partner-workers-token"
THIRD_PARTY_SERVICE = "codepipeline.jobworker.v1.ThirdPartyJobWorkerService"
PARTNER_POLL = {
    "actionTypeId": {
        "category": "ACTION_CATEGORY_BUILD",
        "owner": "ACTION_OWNER_THIRD_PARTY",
        "provider": "DemoPartner",
        "version": "1",
    },
    "maxBatchSize": 1,
}
# Value sets that keep their rate limits in Redis.
REDIS_SETS = [name for name in VALUE_SETS if load_value_set(name).get("rateLimit", {}).get("backend") == "redis"]


@pytest.fixture
def emulator_front(started, tmp_path) -> str:
    """The emulator's AWS wire-protocol front in eu-west-1 (the value sets' region), so calls
    that pass the gateway's authentication travel the real SDK path without leaving the machine."""
    process = Process(
        [str(GATEWAY_BIN), "emulator", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--region", "eu-west-1", "--demo-jobs", "3"],
        base_environment(tmp_path / "emulator-home"),
        cwd=tmp_path,
    )
    started.append(process)
    return process.wait_url(re.compile(r"emulator listening on (http://\S+)"))


# The chart's variables against the binary's own list.


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_variable_is_one_the_binary_reads(value_set: str) -> None:
    known = serve_env_names()
    # The OpenTelemetry SDK's own, which --help does not list (the tracing checks below see them
    # on the exported spans), and the downward-API variable the kubelet expands into one of them.
    sdk = {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_RESOURCE_ATTRIBUTES_POD_NAME"}
    env = render_value_set(value_set).container_env()
    unknown = sorted(name for name in env if name.startswith(("CPGW_", "OTEL_")) and name not in known | sdk)
    assert unknown == [], f"`codepipeline-gateway serve --help` lists no {unknown}"


def test_chart_defaults_match_the_binary() -> None:
    """Where the chart's defaults restate the binary's, they agree (so the values documentation
    and the binary's --help tell the same story). The chart's own choice: log format json."""
    defaults = serve_defaults()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert listen_port(defaults["--listen"]) == values["server"]["grpcPort"]
    assert defaults["--shutdown-timeout"] == f"{values['server']['shutdownTimeoutSeconds']}s"
    assert defaults["--upstream"] == values["upstream"]
    assert defaults["--log"] == values["log"]["level"]
    aws = values["aws"]
    assert defaults["--aws-connect-timeout"] == aws["connectTimeout"]
    assert defaults["--aws-attempt-timeout"] == aws["attemptTimeout"]
    assert defaults["--aws-operation-timeout"] == aws["operationTimeout"]
    assert defaults["--aws-max-attempts"] == str(aws["maxAttempts"])
    emulator = values["emulator"]
    assert defaults["--account-id"] == emulator["accountId"]
    assert defaults["--demo-jobs"] == str(emulator["demoJobs"])
    assert defaults["--redispatch-after"] == emulator["redispatchAfter"]
    assert defaults["--job-timeout"] == emulator["jobTimeout"]
    assert defaults["--latency"] == emulator["latency"]
    assert defaults["--rate-limit-backend"] == values["rateLimit"]["backend"]
    assert defaults["--trace-sampling-ratio"] == str(values["tracing"]["samplingRatio"])
    # The chart's own choice: a key prefix per release (the binary's, then namespace/fullname), so
    # releases sharing one Redis keep their limits apart.
    prefix = render_value_set("redis").container_env()["CPGW_REDIS_KEY_PREFIX"]
    assert prefix.startswith(defaults["--redis-key-prefix"]) and prefix != defaults["--redis-key-prefix"]


def test_defaults_quoted_in_values_comments_are_the_binary_s() -> None:
    """values.yaml documents `null` / empty values as "the gateway's default (`X`)": X must be
    what `serve --help` says for that variable."""
    by_env = {flag["env"]: flag.get("default") for flag in serve_flags() if "env" in flag}
    documented = chart_readme.documented_keys((CHART_DIR / "values.yaml").read_text())
    quoted = 0
    for path, description in documented:
        match = re.search(r"the gateway's default \(`([^`]+)`\)", description)
        if not match:
            continue
        (env,) = set(re.findall(r"`(CPGW_[A-Z0-9_]+)`", description))
        assert by_env.get(env) == match.group(1), (
            f"{path}: values.yaml says {match.group(1)}, the binary {by_env.get(env)}"
        )
        quoted += 1
    assert quoted >= 8


def test_every_serve_flag_has_a_chart_value() -> None:
    """Each variable `serve --help` lists is one the chart's templates set, from a value or from
    the pod (listeners, mounted files, the Redis URL's Secret): no flag is reachable only through
    `extraEnv`."""
    templates = "".join(path.read_text() for path in (CHART_DIR / "templates").iterdir() if path.is_file())
    # Comments name variables they do not set: YAML `#` lines and template `{{/* */}}` blocks.
    code = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", templates, flags=re.S)
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
    missing = sorted(env for env in serve_env_names() if not re.search(rf"\b{env}\b", code))
    assert missing == [], f"no chart value sets {missing}"


def test_every_knob_set_in_the_tuned_value_set_reaches_the_container() -> None:
    """tests/chart/values/tuned.yaml sets knobs away from the binary's defaults: each documented
    value it sets arrives as the variable its documentation names, with that value."""
    tuned = load_value_set("tuned")
    env = render_value_set("tuned").container_env()
    documented = dict(chart_readme.documented_keys((CHART_DIR / "values.yaml").read_text()))
    defaults = {flag["env"]: flag.get("default") for flag in serve_flags() if "env" in flag}
    checked = 0
    for section, knobs in tuned.items():
        if not isinstance(knobs, dict):
            continue
        for key, value in knobs.items():
            names = set(re.findall(r"`(CPGW_[A-Z0-9_]+)`", documented.get(f"{section}.{key}", "")))
            if len(names) != 1:
                continue
            (name,) = names
            assert env.get(name) == str(value), f"{section}.{key}: {name}={env.get(name)!r}, not {value!r}"
            assert defaults.get(name) != str(value), f"{section}.{key} is the default: it proves nothing"
            checked += 1
    assert checked >= 25, checked
    # The knobs of `upstream: aws` alone, rendered (serving needs an AWS identity).
    on_aws = render_value_set(
        "tuned",
        {"upstream": "aws", "aws": {"protocol": "cbor"}, "artifacts": {"s3EndpointUrl": "https://s3.example.com", "memory": 100663296}},
    ).container_env()
    assert on_aws["CPGW_AWS_PROTOCOL"] == "cbor"
    assert on_aws["CPGW_S3_ENDPOINT_URL"] == "https://s3.example.com"
    assert on_aws["CPGW_ARTIFACT_MEMORY"] == "100663296", "a size given as a number of bytes"


def test_metrics_port_default_matches_the_binary() -> None:
    defaults = serve_defaults()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert "--metrics-listen" in defaults, "`serve --help` has no --metrics-listen"
    assert listen_port(defaults["--metrics-listen"]) == values["server"]["metricsPort"]


# The rendered containers, running.


@pytest.mark.parametrize("value_set", SERVING_SETS)
def test_rendered_container_serves_health_on_the_probed_port(
    value_set, external_secrets, pki, tmp_path, started, redis_server, otlp_receiver
) -> None:
    gateway = start_serving(
        value_set, external_secrets, pki, tmp_path, started, redis=redis_server, otlp=otlp_receiver
    )
    assert gateway.health() == "SERVING"
    backend = gateway.env["CPGW_RATE_LIMIT_BACKEND"]
    assert backend == load_value_set(value_set).get("rateLimit", {}).get("backend", "memory")
    # Redis: up once the gateway has reached it with the URL, password and CA the chart gave it.
    samples = gateway.wait_for_sample("gateway_rate_limit_backend_up", 1)
    assert samples[f'gateway_rate_limit_backend{{backend="{backend}"}}'] == 1, samples
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/plain"
        assert "# TYPE" in response.read().decode()
    if gateway.tls is not None:
        with pytest.raises(grpc.RpcError):
            gateway.health(with_tls=False)
    if gateway.client_cert_required:
        with pytest.raises(grpc.RpcError):
            gateway.health(with_client_cert=False)


def test_defaults_refuse_to_start_without_authentication(external_secrets, pki, tmp_path, started) -> None:
    """The chart's defaults (upstream aws, no token file, no mTLS) fail closed: the binary exits
    and says how to fix it, instead of serving unauthenticated."""
    gateway, address = start("defaults", external_secrets, pki, tmp_path, started)
    assert address is None, "the gateway served with no caller authentication configured"
    assert gateway.process.process.returncode != 0
    assert re.search(r"token.file|allow.unauthenticated", gateway.process.output(), re.I), gateway.process.output()


@pytest.mark.parametrize("value_set", sorted(TOKENS))
def test_token_file_authenticates_callers(
    value_set, external_secrets, pki, tmp_path, started, emulator_front, redis_server, otlp_receiver
) -> None:
    gateway = start_serving(
        value_set, external_secrets, pki, tmp_path, started,
        override={"aws": {"endpointUrl": emulator_front}}, redis=redis_server, otlp=otlp_receiver,
    )  # fmt: skip
    assert gateway.env["CPGW_AWS_ENDPOINT_URL"] == emulator_front
    if value_set in REDIS_SETS:
        # Until its first answer from Redis a fail-closed gateway refuses job-worker calls.
        gateway.wait_for_sample("gateway_rate_limit_backend_up", 1)
    allowed = gateway.poll(TOKENS[value_set])
    assert allowed.returncode == 0, allowed.stderr
    (job,) = json.loads(allowed.stdout)["jobs"]
    assert job["data"]["actionTypeId"]["provider"] == "DemoBuilder"
    for token in (None, "not-a-client-token"):
        refused = gateway.poll(token)
        assert refused.returncode != 0 and "Code: Unauthenticated" in refused.stdout + refused.stderr, refused
    if value_set == "tokens":
        # A client whose allowedRpcs lack PollForJobs, and reflection behind authentication.
        denied = gateway.poll("dashboards-token")
        assert denied.returncode != 0 and "Code: PermissionDenied" in denied.stdout + denied.stderr, denied
        # A client scoped to another team's action type, from the chart's actionTypes.
        other_team = gateway.poll("team-b-token")
        answer = other_team.stdout + other_team.stderr
        assert other_team.returncode != 0 and "Code: PermissionDenied" in answer, other_team
        assert "action type Build/Custom/DemoBuilder/1" in answer, other_team
        assert gateway.env["CPGW_REFLECTION_REQUIRES_AUTH"] == "true"
        listed = gateway.grpcurl("-H", "authorization: Bearer go-workers-token", gateway.target, "list")
        assert listed.returncode == 0 and "codepipeline.jobworker.v1.JobWorkerService" in listed.stdout, listed
        anonymous = gateway.grpcurl(gateway.target, "list")
        assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stdout + anonymous.stderr, anonymous


# Rate limits in Redis.


def test_redis_url_is_kept_out_of_the_config_map(external_secrets, pki, tmp_path, started, redis_server) -> None:
    """The URL (with its password) reaches the process from the chart's Secret, not the
    ConfigMap, and the password nowhere else."""
    gateway = start_serving("redis", external_secrets, pki, tmp_path, started, redis=redis_server)
    assert gateway.env["CPGW_REDIS_URL"] == f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    config_map = yaml.dump(gateway.rendered.one("ConfigMap")["data"])
    assert "CPGW_REDIS_URL" not in config_map and redis_server.password not in config_map
    assert redis_server.password not in json.dumps(gateway.rendered.deployment)
    assert redis_server.password not in gateway.process.output(), "the gateway logged the Redis URL"


def poll_at_once(gateways: list[Gateway], token: str) -> tuple[list[tuple[int, str]], float]:
    """One PollForJobs through each gateway, all at once; (returncode, output) of each and the
    seconds the lot took."""
    began = time.monotonic()
    running = [
        subprocess.Popen(
            gateway.grpcurl_command(*gateway.call_args(POLL_METHOD, DEMO_POLL, token)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        for gateway in gateways
    ]  # fmt: skip
    outputs = [(process.wait(timeout=30), process.communicate()[0]) for process in running]
    return outputs, time.monotonic() - began


def test_pods_share_a_client_s_rate_limit_in_redis(
    external_secrets, pki, tmp_path, started, emulator_front, redis_server
) -> None:
    """Two pods of the `redis` value set against one redis-server: the paced client (one call a
    second, a burst of two) gets two calls over both together, where two pods with their own
    limits would let four through. Its key is under the prefix the chart sets."""
    override = {"aws": {"endpointUrl": emulator_front}}
    pods = [
        start_serving("redis", external_secrets, pki, tmp_path / name, started, override=override, redis=redis_server)
        for name in ("pod-a", "pod-b")
    ]
    for pod in pods:
        pod.wait_for_sample("gateway_rate_limit_backend_up", 1)
    outputs, took = poll_at_once(pods * 2, "paced-token")
    assert all(code == 0 or "Code: ResourceExhausted" in out for code, out in outputs), outputs
    admitted = sum(code == 0 for code, _ in outputs)
    assert took < 2, f"four calls took {took:.1f} s: too slow to tell shared limits from separate ones"
    assert admitted <= 2 + int(took), f"{admitted} of 4 calls admitted in {took:.1f} s: the limit is not shared"
    assert any("client:paced" in out for code, out in outputs if code != 0), outputs
    prefix = pods[0].env["CPGW_REDIS_KEY_PREFIX"]
    assert prefix == "codepipeline-gateway:ci/gw-codepipeline-gateway:"
    keys = redis_server.command("KEYS", f"{prefix}*")
    assert f"{prefix}client:paced" in keys, keys
    assert pods[0].metrics()["gateway_rate_limit_fallbacks_total"] == 0


@pytest.mark.parametrize("value_set", REDIS_SETS)
def test_calls_while_redis_is_away(value_set, external_secrets, pki, tmp_path, started, emulator_front) -> None:
    """Redis stops: the gateway falls back to its own limits and keeps serving (fail open, the
    default), or refuses job-worker calls with UNAVAILABLE where `rateLimit.failClosed` is set."""
    own = RedisServer(tmp_path / "redis", pki)
    started.append(own)
    secrets = {**external_secrets, **redis_secrets(own, pki)}
    gateway = start_serving(
        value_set, secrets, pki, tmp_path, started, override={"aws": {"endpointUrl": emulator_front}}, redis=own
    )
    fail_closed = load_value_set(value_set)["rateLimit"].get("failClosed", False)
    assert ("CPGW_RATE_LIMIT_FAIL_CLOSED" in gateway.env) == fail_closed
    gateway.wait_for_sample("gateway_rate_limit_backend_up", 1)
    token = TOKENS[value_set]
    assert gateway.poll(token).returncode == 0
    own.stop()
    answer = gateway.poll(token)
    if fail_closed:
        said = answer.stdout + answer.stderr
        assert answer.returncode != 0 and "Code: Unavailable" in said and "fails closed" in said, answer
    else:
        assert answer.returncode == 0, answer
    samples = gateway.wait_for_sample("gateway_rate_limit_backend_up", 0)
    assert samples["gateway_rate_limit_fallbacks_total"] >= 1, samples
    assert gateway.health() == "SERVING", "health does not depend on Redis"


# Traces exported to an OpenTelemetry collector.

TRACING_TOKEN = TOKENS["tracing"]
JOB_WORKER_SERVICE = "codepipeline.jobworker.v1.JobWorkerService"


def is_poll_server_span(span) -> bool:
    return span.kind == "server" and span.name == POLL_METHOD


def test_calls_are_traced_with_the_resource_the_chart_sets(
    external_secrets, pki, tmp_path, started, emulator_front, otlp_receiver
) -> None:
    """The `tracing` value set against an OTLP receiver: a PollForJobs through the gateway (on the
    real SDK path to the emulator's AWS front) is exported as a server span, the CodePipeline call
    a client span under it, and the resource is what the chart set: the service name
    (OTEL_SERVICE_NAME) and the attributes of OTEL_RESOURCE_ATTRIBUTES, with the pod's and
    node's names expanded into them. Nothing of the job, nor the caller's token, is exported."""
    pod = PodIdentity("gw-codepipeline-gateway-6f7b9c8d5-q8r2k", node_name="ip-10-0-3-21.eu-west-1.compute.internal")
    gateway = start_serving(
        "tracing", external_secrets, pki, tmp_path, started,
        override={"aws": {"endpointUrl": emulator_front}}, otlp=otlp_receiver, pod=pod,
    )  # fmt: skip
    assert gateway.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{otlp_receiver.port}"
    answer = gateway.poll(TRACING_TOKEN)
    assert answer.returncode == 0, answer.stderr
    (job,) = json.loads(answer.stdout)["jobs"]

    server = otlp_receiver.wait_for_span(is_poll_server_span)
    assert server.parent_span_id == "", "no traceparent was sent: the gateway starts the trace"
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == JOB_WORKER_SERVICE
    assert server.attributes["rpc.method"] == "PollForJobs"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["client_id"] == "python-workers"
    assert server.status == "unset", "an OK call is no error"
    tracing = load_value_set("tracing")["tracing"]
    assert server.resource["service.name"] == tracing["serviceName"]
    chart_set = {
        "k8s.namespace.name": NAMESPACE,
        "k8s.pod.name": pod.name,
        "k8s.node.name": pod.node_name,
        "deployment.environment.name": tracing["resourceAttributes"]["deployment.environment.name"],
        "service.namespace": tracing["resourceAttributes"]["service.namespace"],
    }
    assert chart_set.items() <= server.resource.items(), server.resource

    client = otlp_receiver.wait_for_span(lambda span: span.kind == "client" and span.trace_id == server.trace_id)
    assert client.parent_span_id == server.span_id
    assert client.attributes["rpc.system"] == "aws-api" and client.attributes["rpc.service"] == "CodePipeline"
    assert client.attributes["rpc.method"] == "PollForJobs" and client.attributes["outcome"] == "success"
    assert client.attributes["aws_request_id"] and int(client.attributes["attempts"]) == 1, client.attributes
    assert client.resource == server.resource

    exported = otlp_receiver.exported_bytes()
    credentials = job["data"]["artifactCredentials"]
    for secret in (TRACING_TOKEN, job["nonce"], credentials["secretAccessKey"], credentials["sessionToken"]):
        assert secret.encode() not in exported, f"{secret!r} was exported"


def test_the_gateway_s_own_service_name_without_one_in_values(
    external_secrets, pki, tmp_path, started, emulator_front, otlp_receiver
) -> None:
    """With `tracing.serviceName` empty the chart sets no OTEL_SERVICE_NAME and the spans carry
    the gateway's own name, which the values' comment promises."""
    override = {"aws": {"endpointUrl": emulator_front}, "tracing": {"serviceName": ""}}
    gateway = start_serving("tracing", external_secrets, pki, tmp_path, started, override=override, otlp=otlp_receiver)
    assert "OTEL_SERVICE_NAME" not in gateway.env
    answer = gateway.poll(TRACING_TOKEN)
    assert answer.returncode == 0, answer.stderr
    server = otlp_receiver.wait_for_span(is_poll_server_span)
    assert server.resource["service.name"] == "codepipeline-gateway"
    assert server.resource["k8s.pod.name"] == gateway.pod.name


def test_the_sampling_ratio_holds_and_a_caller_s_sampled_flag_is_followed(
    external_secrets, pki, tmp_path, started, emulator_front, otlp_receiver
) -> None:
    """`tracing.samplingRatio: 0`: calls that start their trace at the gateway, or whose caller
    did not sample theirs, are not exported; a caller's sampled trace is, continued under the
    caller's span."""
    override = {"aws": {"endpointUrl": emulator_front}, "tracing": {"samplingRatio": 0}}
    gateway = start_serving("tracing", external_secrets, pki, tmp_path, started, override=override, otlp=otlp_receiver)
    assert gateway.env["CPGW_TRACE_SAMPLING_RATIO"] == "0"
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for metadata in (
        {},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": f"00-{caller_trace}-{caller_span}-01"},
    ):
        answer = gateway.call(POLL_METHOD, DEMO_POLL, TRACING_TOKEN, metadata)
        assert answer.returncode == 0, answer.stderr
    server = otlp_receiver.wait_for_span(is_poll_server_span)
    assert (server.trace_id, server.parent_span_id) == (caller_trace, caller_span)
    # Spans are exported in the order they end: the first two calls' would have come first.
    assert {span.trace_id for span in otlp_receiver.spans()} == {caller_trace}, otlp_receiver.spans()


def test_the_gateway_serves_while_the_collector_is_away(
    external_secrets, pki, tmp_path, started, emulator_front
) -> None:
    """A pod may start before its collector does: the exporter connects when it has spans to
    send, so the gateway serves, and its calls answer, with nobody on the endpoint."""
    away = OtlpReceiver()
    away.stop()
    override = {"aws": {"endpointUrl": emulator_front}}
    gateway = start_serving("tracing", external_secrets, pki, tmp_path, started, override=override, otlp=away)
    assert gateway.health() == "SERVING"
    answer = gateway.poll(TRACING_TOKEN)
    assert answer.returncode == 0, answer.stderr
    assert gateway.health() == "SERVING"


def test_an_https_collector_is_taken_by_the_binary(external_secrets, pki, tmp_path, started, otlp_receiver) -> None:
    """Why values.schema.json takes https:// endpoints: the gateway's OTLP exporter speaks TLS
    (it serves with one, whether or not the collector answers the handshake)."""
    https = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{otlp_receiver.port}"}
    gateway, address = start("tracing", external_secrets, pki, tmp_path, started, otlp=otlp_receiver, environment=https)
    assert address is not None, gateway.process.output()


# Third-party client tokens held by the gateway.


def kubelet_update(path: Path, text: str) -> None:
    """Replaces a mounted Secret's file at once, as the kubelet's atomic swap does: the gateway
    sees the old content or the new, never half of it."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    os.replace(staged, path)


def test_client_token_file_is_loaded_from_the_secret_and_reloaded(external_secrets, pki, tmp_path, started) -> None:
    """The Secret of thirdParty.clientTokens reaches the gateway as a file it loads at start (all
    the clients of the checks' Secret in force), and a new version of the Secret is picked up
    within the poll interval, without a restart; one that does not load leaves the last good one
    in force."""
    gateway = start_serving("third-party", external_secrets, pki, tmp_path, started)
    path = Path(gateway.env["CPGW_CLIENT_TOKEN_FILE"])
    assert path.is_relative_to(tmp_path) and path.name == "clients.toml", path
    samples = gateway.wait_for_sample("gateway_client_token_file_healthy", 1)
    assert samples["gateway_client_token_file_clients"] == len(PARTNER_CLIENT_TOKENS), samples
    assert samples['gateway_client_token_file_reloads_total{result="success"}'] >= 1, samples

    rotated = {**PARTNER_CLIENT_TOKENS, "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d": "a-third-partner-token"}
    kubelet_update(path, client_token_file(rotated))
    samples = gateway.wait_for_sample("gateway_client_token_file_clients", len(rotated))
    assert samples["gateway_client_token_file_healthy"] == 1, samples
    kubelet_update(path, '[[clients]]\nclient_id = "not-a-uuid"\nclient_token = "t"\n')
    samples = gateway.wait_for_sample("gateway_client_token_file_healthy", 0)
    assert samples["gateway_client_token_file_clients"] == len(rotated), samples
    assert samples['gateway_client_token_file_reloads_total{result="failure"}'] >= 1, samples
    assert gateway.health() == "SERVING"
    output = gateway.process.output()
    assert not [token for token in rotated.values() if token in output], "the gateway logged a client token"


def third_party(gateway: Gateway, method: str, body: dict, code: str = "OK") -> dict:
    """`method` of the third-party service through `gateway` as the partner workers, with no
    client token; the answer (JSON) when `code` is OK."""
    answer = gateway.call(f"{THIRD_PARTY_SERVICE}/{method}", body, PARTNER_WORKERS_TOKEN)
    said = answer.stdout + answer.stderr
    if code == "OK":
        assert answer.returncode == 0, f"{method} {body}: {said}"
        return json.loads(answer.stdout or "{}")
    assert answer.returncode != 0 and f"Code: {code}" in said, f"{method} {body}: {said}"
    return {}


def test_third_party_calls_get_the_client_token_the_gateway_holds(
    external_secrets, pki, tmp_path, started, emulator_front
) -> None:
    """Two pods of the `third-party` value set against the emulator's AWS front, whose demo
    third-party jobs need the demo client's token: the workers send none. Named by its
    client_id, the client's token comes from the mounted file on either pod; unnamed, only the
    pod whose poll returned the job knows the client (the other answers FAILED_PRECONDITION)."""
    override = {"aws": {"endpointUrl": emulator_front}}
    polling, other = [
        start_serving("third-party", external_secrets, pki, tmp_path / name, started, override=override)
        for name in ("pod-a", "pod-b")
    ]
    (job,) = third_party(polling, "PollForThirdPartyJobs", PARTNER_POLL)["jobs"]
    assert job["clientId"] == DEMO_PARTNER_CLIENT_ID
    named = {"jobId": job["jobId"], "clientId": job["clientId"]}
    for pod in (polling, other):
        details = third_party(pod, "GetThirdPartyJobDetails", named)["jobDetails"]
        assert details["id"] == job["jobId"] and details["nonce"], details
    third_party(polling, "GetThirdPartyJobDetails", {"jobId": job["jobId"]})
    third_party(other, "GetThirdPartyJobDetails", {"jobId": job["jobId"]}, "FailedPrecondition")
    third_party(other, "AcknowledgeThirdPartyJob", {**named, "nonce": details["nonce"]})
    third_party(polling, "PutThirdPartyJobSuccessResult", named)

    supplied = 'gateway_client_tokens_supplied_total{{client_from="{}"}}'
    assert polling.metrics()[supplied.format("request")] == 2
    assert polling.metrics()[supplied.format("poll")] == 1
    assert other.metrics()[supplied.format("request")] == 2
    assert other.metrics().get(supplied.format("poll"), 0) == 0
    for pod in (polling, other):
        assert PARTNER_CLIENT_TOKENS[DEMO_PARTNER_CLIENT_ID] not in pod.process.output()


def test_client_certificate_authenticates_callers(external_secrets, pki, tmp_path, started, emulator_front) -> None:
    """mTLS alone: the certificate is the credential; with no token file its client may call
    everything, and without a certificate there is no connection."""
    gateway = start_serving(
        "mtls", external_secrets, pki, tmp_path, started, override={"aws": {"endpointUrl": emulator_front}}
    )
    assert gateway.client_cert_required
    allowed = gateway.poll(None)
    assert allowed.returncode == 0, allowed.stderr
    assert len(json.loads(allowed.stdout)["jobs"]) == 1
    refused = gateway.poll(None, with_client_cert=False)
    assert refused.returncode != 0, refused.stdout


def test_token_file_entries_apply_to_certificate_identities(
    external_secrets, pki, tmp_path, started, emulator_front
) -> None:
    """An auth.clients entry without tokenSha256 sets the permissions of the mTLS client whose
    certificate's first SAN is its id; a token file makes the certificate optional."""
    override = {
        "aws": {"endpointUrl": emulator_front},
        "auth": {"clients": [{"id": CLIENT_ID, "allowedRpcs": ["GetJobDetails"]}]},
    }
    gateway = start_serving("mtls", external_secrets, pki, tmp_path, started, override=override)
    assert "token_sha256" not in gateway.rendered.one("Secret")["stringData"]["tokens.toml"]
    denied = gateway.poll(None)
    assert denied.returncode != 0 and "Code: PermissionDenied" in denied.stdout + denied.stderr, denied
    assert not gateway.client_cert_required
    assert gateway.health(with_client_cert=False) == "SERVING"
    anonymous = gateway.poll(None, with_client_cert=False)
    assert "Code: Unauthenticated" in anonymous.stdout + anonymous.stderr, anonymous


def test_emulator_mode_serves_demo_jobs(external_secrets, pki, tmp_path, started) -> None:
    gateway = start_serving("emulator", external_secrets, pki, tmp_path, started)
    answer = gateway.poll(None)
    assert answer.returncode == 0, answer.stderr
    (job,) = json.loads(answer.stdout)["jobs"]
    assert job["accountId"] == load_value_set("emulator")["emulator"]["accountId"]


def test_shutdown_fits_the_grace_period(external_secrets, pki, tmp_path, started) -> None:
    """SIGTERM (what the kubelet sends after any preStop hook): health turns NOT_SERVING while
    new connections are still accepted for the lame-duck period, and the process exits cleanly
    within the rendered terminationGracePeriodSeconds."""
    gateway = start_serving("hpa-pdb", external_secrets, pki, tmp_path, started)
    lame_duck = load_value_set("hpa-pdb")["server"]["lameDuckSeconds"]
    grace = gateway.rendered.pod_spec["terminationGracePeriodSeconds"]
    assert gateway.health() == "SERVING"

    sigterm_at = time.monotonic()
    gateway.process.process.send_signal(signal.SIGTERM)
    answers: list[tuple[float, str]] = []
    while gateway.process.process.poll() is None and time.monotonic() - sigterm_at < grace:
        try:
            answers.append((time.monotonic() - sigterm_at, gateway.health()))  # a new connection each time
        except grpc.RpcError as error:
            answers.append((time.monotonic() - sigterm_at, error.code().name))
        time.sleep(0.2)
    try:
        code = gateway.process.process.wait(timeout=max(0.1, grace - (time.monotonic() - sigterm_at)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace} s after SIGTERM (terminationGracePeriodSeconds)\n{answers}")
    assert code == 0, gateway.process.output()
    not_serving = [at for at, status in answers if status == "NOT_SERVING"]
    assert not_serving, f"health never answered NOT_SERVING after SIGTERM: {answers}"
    assert max(not_serving) >= lame_duck - 1, f"the listener closed before the lame-duck period ended: {answers}"
    assert all(status != "SERVING" for at, status in answers if at > 0.5), answers
