"""What the chart checks share: the chart, rendering it with Helm v4 (helm-python-sdk), the value
sets in values/, running the real gateway binary the way a rendered container would (`start`,
`start_serving`: see test_chart_drift.py for what that means and what is changed), a real
Redis for the value sets that keep their rate limits there (`RedisServer`, Debian's redis-server),
and an OTLP/gRPC receiver for the value sets that export traces (`OtlpReceiver`).

The binary is `target/debug/codepipeline-gateway` unless `GATEWAY_BIN` names another one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
import urllib.request

import grpc
import helm_python as helm
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gateway_process import (
    GATEWAY_BIN,
    GATEWAY_READY,
    READY_TIMEOUT_SECONDS,
    REPO_ROOT,
    TOOLS_BIN,
    RunningBinary,
    require_binary,
)

CHART_DIR = REPO_ROOT / "helm" / "codepipeline-gateway"
VALUES_DIR = Path(__file__).resolve().parent / "values"

RELEASE = "gw"
NAMESPACE = "ci"
FULLNAME = f"{RELEASE}-codepipeline-gateway"
SERVICE_HOST = f"{FULLNAME}.{NAMESPACE}.svc"

# The Kubernetes version the rendered objects are validated against (kubernetes-validate's
# offline schemas): a current release. The chart's declared minimum is checked too.
KUBERNETES_VERSION = "1.34"

VALUE_SETS = sorted(path.stem for path in VALUES_DIR.glob("*.yaml"))


# The emulator's identity (its defaults), standing in for the AWS identity that IRSA or EKS Pod
# Identity would inject into the pod.
EMULATOR_ACCESS_KEY_ID = "AKIDEMULATOR00000000"
EMULATOR_SECRET_ACCESS_KEY = "emulator-secret-access-key"

HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def cargo_version() -> str:
    """The gateway package's version, which it may inherit from the workspace."""
    manifest = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())
    version = manifest["package"]["version"]
    if isinstance(version, dict) and version.get("workspace"):
        version = manifest["workspace"]["package"]["version"]
    return str(version)


def chart_metadata() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())


def load_value_set(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing for plain values: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class Rendered:
    """The chart rendered by Helm: the Kubernetes objects, the raw manifests, and NOTES.txt."""

    manifests: dict[str, str]
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""

    def __post_init__(self) -> None:
        for path, text in sorted(self.manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    document.setdefault("metadata", {})
                    document["metadata"].setdefault("annotations", {})
                    self.objects.append(document)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
        return found[0]

    def maybe(self, kind: str, name: str | None = None) -> dict[str, Any] | None:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod_spec["containers"]
        return container

    @property
    def gateway_service(self) -> dict[str, Any]:
        return self.one("Service", FULLNAME)

    def container_port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container["ports"]:
            if port["name"] == name_or_number:
                return port["containerPort"]
        raise AssertionError(f"the container has no port named {name_or_number!r}")

    def secret_data(self, name: str) -> dict[str, bytes] | None:
        """The data of a Secret the chart renders, or None when it renders no such Secret."""
        secret = self.maybe("Secret", name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        return data

    def container_env(
        self, external: dict[str, dict[str, bytes]] | None = None, pod: PodIdentity | None = None
    ) -> dict[str, str]:
        """The gateway container's environment as the kubelet builds it: envFrom sources in
        order, then env entries (later ones win). An entry's `secretKeyRef` is resolved from the
        Secrets the chart renders, else from `external` (the Secrets a cluster would hold). With
        no `external`, a reference to a Secret the chart does not render is kept as the text
        `secretKeyRef:<name>/<key>` (the render checks look at names); with it, every reference
        must resolve, as the kubelet would refuse to start the container otherwise. A
        `fieldRef` (the downward API) is resolved from `pod` (by default `POD`), and `$(NAME)` in
        a `value` is expanded from the variables defined before it, as the kubelet does."""
        pod = pod or POD
        env: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            if "configMapRef" in source:
                config_map = self.one("ConfigMap", source["configMapRef"]["name"])
                env.update({source.get("prefix", "") + k: v for k, v in config_map["data"].items()})
            elif "secretRef" in source:
                data = self.secret_data(source["secretRef"]["name"])
                assert data is not None, f"envFrom names a Secret the chart does not render: {source}"
                env.update({source.get("prefix", "") + k: v.decode() for k, v in data.items()})
            else:
                raise AssertionError(f"unsupported envFrom source {source}")
        for entry in self.container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = kubelet_expand(entry["value"], env)
                continue
            field = entry.get("valueFrom", {}).get("fieldRef")
            if field is not None:
                assert set(entry) == {"name", "valueFrom"}, f"the drift check cannot resolve env entry {entry}"
                env[entry["name"]] = pod.field(field["fieldPath"])
                continue
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            assert reference is not None and set(entry) == {"name", "valueFrom"}, (
                f"the drift check cannot resolve env entry {entry}"
            )
            name, key = reference["name"], reference["key"]
            data = self.secret_data(name)
            if data is None and external is not None:
                assert name in external, f"env {entry['name']} names Secret {name!r}, which the checks do not provide"
                data = external[name]
            if data is None:
                env[entry["name"]] = f"secretKeyRef:{name}/{key}"
                continue
            assert key in data, f"env {entry['name']}: Secret {name!r} has no key {key!r}"
            env[entry["name"]] = data[key].decode()
        return env


@dataclass(frozen=True)
class PodIdentity:
    """What the downward API tells a container about its pod: the fields the chart reads."""

    name: str
    namespace: str = NAMESPACE
    node_name: str = "ip-10-0-12-34.eu-west-1.compute.internal"

    def field(self, path: str) -> str:
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace, "spec.nodeName": self.node_name}
        assert path in fields, f"the checks do not know the downward API field {path!r}"
        return fields[path]


# The pod a rendered container runs in, unless a check names another.
POD = PodIdentity(f"{FULLNAME}-5d8f7c9b6-x2x4q")


def kubelet_expand(text: str, defined: dict[str, str]) -> str:
    """`$(NAME)` in an env value replaced with the variable NAME defined before it, as the
    kubelet does: `$$` is a literal `$`, and a reference to an undefined variable stays as it is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(defined.get(name, text[i : end + 1]))
            i = end + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def render(values: dict[str, Any] | None = None, **options: Any) -> Rendered:
    options.setdefault("name", RELEASE)
    options.setdefault("namespace", NAMESPACE)
    with helm.Chart.load(CHART_DIR) as chart:
        return Rendered(chart.render(values or {}, **options))


def render_value_set(name: str, override: dict[str, Any] | None = None) -> Rendered:
    return render(merge(load_value_set(name), override or {}))


def duration_seconds(text: str) -> float:
    """A humantime duration as the chart writes them (`5s`, `1m30s`, `250ms`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    return sum(int(n) * units[u] for n, u in parts)


def listen_port(address: str) -> int:
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"not a host:port listen address: {address}"
    return int(port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def serve_flags() -> list[dict[str, str]]:
    """`codepipeline-gateway serve --help`, read back: each flag with its env var and default."""
    help_text = run_binary("serve", "--help").stdout
    flags: list[dict[str, str]] = []
    for line in help_text.splitlines():
        if match := re.match(r"\s+(--[a-z0-9-]+)", line):
            flags.append({"flag": match.group(1)})
        # `[env: NAME=]`, or `[env: NAME]` for a flag whose value --help never shows (a secret).
        elif flags and (match := re.search(r"\[env: ([A-Z0-9_]+)[=\]]", line)):
            flags[-1]["env"] = match.group(1)
        elif flags and (match := re.search(r"\[default: ([^\]]+)\]", line)):
            flags[-1]["default"] = match.group(1)
        # A default that depends on another flag is told in prose, its first one being for
        # `--upstream aws` (the binary's default, and the chart's): `Default: ADDR, or ...`.
        elif flags and "default" not in flags[-1] and (match := re.search(r"Default: ([^\s,]+),", line)):
            flags[-1]["default"] = match.group(1)
    return flags


def serve_env_names() -> set[str]:
    """Every environment variable `codepipeline-gateway serve` reads, from its own --help."""
    return {flag["env"] for flag in serve_flags() if "env" in flag}


def serve_defaults() -> dict[str, str]:
    """`--flag` -> default, from `codepipeline-gateway serve --help`."""
    return {flag["flag"]: flag["default"] for flag in serve_flags() if "default" in flag}


def run_binary(*args: str) -> subprocess.CompletedProcess[str]:
    require_binary()
    return subprocess.run([str(GATEWAY_BIN), *args], capture_output=True, text=True, timeout=30, check=True)


class Process(RunningBinary):
    """The binary started with a rendered pod's arguments and environment (`args[0]` is the
    binary). Stopping kills it: a rendered gateway would spend its lame-duck period on SIGTERM,
    and the one check of graceful shutdown sends SIGTERM itself."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        super().__init__(*args[1:], binary=Path(args[0]), env=env, cwd=cwd)
        self.env = env

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> str | None:
        """The address from the `grpc listening on ADDR` line, or None if the process exited
        first."""
        return self.first_match(GATEWAY_READY, timeout)

    def wait_url(self, pattern: re.Pattern[str], timeout: float = READY_TIMEOUT_SECONDS) -> str:
        return self.wait_until_ready(pattern, timeout)

    def stop(self) -> int:
        self.kill()
        return self.process.returncode


@dataclass
class Pki:
    """A CA, a server certificate for the gateway and a client certificate signed by it (PEM)."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    server_name: str


# Running a rendered gateway container as a process.

BINARY_IN_IMAGE = "/usr/local/bin/codepipeline-gateway"
DEMO_POLL = {
    "actionTypeId": {
        "category": "ACTION_CATEGORY_BUILD",
        "owner": "ACTION_OWNER_CUSTOM",
        "provider": "DemoBuilder",
        "version": "1",
    },
    "maxBatchSize": 1,
}
POLL_METHOD = "codepipeline.jobworker.v1.JobWorkerService/PollForJobs"
JOB_WORKER_PROTO = "codepipeline/jobworker/v1/job_worker.proto"
PROTO_INCLUDES = ("proto", "proto-deps")


@dataclass
class Gateway:
    """The rendered gateway container, running as a process."""

    process: Process
    rendered: Rendered
    env: dict[str, str]
    probe_port: int
    metrics_port: int
    files: Path
    tls: Pki | None
    client_cert: bool
    pod: PodIdentity = POD

    @property
    def client_cert_required(self) -> bool:
        """mTLS with no token file: a certificate is the only credential, so the handshake
        demands one. With a token file too, a certificate is optional."""
        return self.client_cert and "CPGW_TOKEN_FILE" not in self.env

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.probe_port}"

    def channel(self, *, with_tls: bool | None = None, with_client_cert: bool | None = None) -> grpc.Channel:
        use_tls = self.tls is not None if with_tls is None else with_tls
        use_cert = self.client_cert if with_client_cert is None else with_client_cert
        if not use_tls:
            return grpc.insecure_channel(self.target)
        assert self.tls is not None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca_cert,
            private_key=self.tls.client_key if use_cert else None,
            certificate_chain=self.tls.client_cert if use_cert else None,
        )
        return grpc.secure_channel(
            self.target, credentials, options=[("grpc.ssl_target_name_override", self.tls.server_name)]
        )

    def health(self, **channel_options: bool) -> str:
        with self.channel(**channel_options) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            # HealthCheckRequest{service: ""} is empty; HealthCheckResponse{status} is field 1.
            answer = check(b"", timeout=5)
        assert answer in (b"", b"\x08\x01", b"\x08\x02", b"\x08\x03"), answer
        return HEALTH_STATUS[answer[1] if answer else 0]

    def grpcurl_command(self, *args: str) -> list[str]:
        """grpcurl with this gateway's transport (plaintext, TLS, client certificate) and `args`."""
        if self.tls is None:
            transport = ["-plaintext"]
        else:
            transport = ["-cacert", str(self.files / "pki/ca.crt"), "-servername", self.tls.server_name]
            if self.client_cert:
                transport += ["-cert", str(self.files / "pki/client.crt"), "-key", str(self.files / "pki/client.key")]
        return [str(TOOLS_BIN / "grpcurl"), *transport, *args]

    def grpcurl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.grpcurl_command(*args),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    def call_args(
        self, method: str, body: dict[str, Any], token: str | None = None, metadata: dict[str, str] | None = None
    ) -> list[str]:
        """grpcurl's arguments for calling `method` (`service/Method`) of the job-worker API with
        `body` and `metadata` (e.g. a `traceparent`), described by the proto file rather than by
        reflection (which may itself need credentials)."""
        header = ["-H", f"authorization: Bearer {token}"] if token else []
        header += [arg for name, value in (metadata or {}).items() for arg in ("-H", f"{name}: {value}")]
        # The include paths of build.rs: the project's protos, and the Google ones they import.
        imports = [arg for path in PROTO_INCLUDES for arg in ("-import-path", str(REPO_ROOT / path))]
        return [
            *imports, "-proto", JOB_WORKER_PROTO, *header, "-d", json.dumps(body), self.target, method,
        ]  # fmt: skip

    def call(
        self, method: str, body: dict[str, Any], token: str | None = None, metadata: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.grpcurl(*self.call_args(method, body, token, metadata))

    def poll(self, token: str | None, *, with_client_cert: bool | None = None) -> subprocess.CompletedProcess[str]:
        """PollForJobs for the demo action type."""
        saved = self.client_cert
        if with_client_cert is not None:
            self.client_cert = with_client_cert
        try:
            return self.call(POLL_METHOD, DEMO_POLL, token)
        finally:
            self.client_cert = saved

    def metrics(self) -> dict[str, float]:
        """The metrics port's samples: `name{labels}` (as written) -> value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            assert response.status == 200
            page = response.read().decode()
        samples = {}
        for line in page.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                samples[series] = float(value)
        return samples

    def wait_for_sample(self, series: str, value: float, timeout: float = 10) -> dict[str, float]:
        """Polls the metrics port until `series` has `value`; returns the samples then."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.metrics()
            if samples.get(series) == value:
                return samples
            if time.monotonic() > deadline:
                shown = {k: v for k, v in samples.items() if "rate_limit" in k or "redis" in k}
                pytest.fail(f"{series} is not {value} after {timeout} s: {shown}\n{self.process.output()}")
            time.sleep(0.1)


# A real Redis for the value sets with `rateLimit.backend: redis`.

REDIS_PASSWORD = "chart-checks-redis-password"


class RedisServer:
    """Debian's redis-server on free ports of 127.0.0.1, with no persistence and a password
    (`requirepass`): plaintext on `port`, TLS on `tls_port` with the checks' server certificate
    (SANs 127.0.0.1 and localhost, signed by the checks' CA). Talked to with RESP over a socket."""

    def __init__(self, directory: Path, pki: Pki, password: str = REDIS_PASSWORD) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            pytest.fail("redis-server is not installed: run scripts/install-system-packages.sh (Debian's redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        for name, pem in (("server.crt", pki.server_cert), ("server.key", pki.server_key), ("ca.crt", pki.ca_cert)):
            (directory / name).write_bytes(pem)
        self.password = password
        self.port, self.tls_port = free_port(), free_port()
        self._log = (directory / "redis.log").open("w+")
        self.process = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--tls-port", str(self.tls_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(directory), "--requirepass", password,
                "--tls-cert-file", str(directory / "server.crt"), "--tls-key-file", str(directory / "server.key"),
                "--tls-ca-cert-file", str(directory / "ca.crt"), "--tls-auth-clients", "no",
            ],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    break
            except (OSError, RedisError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                self.stop()
                pytest.fail(f"redis-server did not start:\n{self._log.read()}")
            time.sleep(0.05)

    def address_in(self, url: str) -> str:
        """`url` with this server's address as its host and port (the TLS port for rediss://);
        its credentials and database are kept."""
        parts = urlsplit(url)
        port = self.tls_port if parts.scheme == "rediss" else self.port
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def command(self, *args: str) -> Any:
        """One command on the plaintext port, after AUTH: its reply (str, int, list or None)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            reader = sock.makefile("rb")
            for command in (("AUTH", self.password), args):
                sock.sendall(b"*%d\r\n" % len(command))
                for arg in command:
                    data = arg.encode()
                    sock.sendall(b"$%d\r\n%s\r\n" % (len(data), data))
                reply = self._reply(reader)
            return reply

    def _reply(self, reader) -> Any:
        line = reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:].decode()
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = reader.read(int(rest) + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._reply(reader) for _ in range(int(rest))] if int(rest) >= 0 else None
        raise OSError(f"not a RESP reply: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class RedisError(Exception):
    """An error reply of Redis."""


# An OpenTelemetry collector for the value sets with `tracing.otlpEndpoint`.


@dataclass(frozen=True)
class ExportedSpan:
    """One span as a collector receives it, with the resource of the batch it came in."""

    name: str
    kind: str  # server, client, internal, ...
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # empty for a root span
    status: str  # unset, ok, error
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs) -> dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


class OtlpReceiver:
    """An OTLP/gRPC trace receiver on a free port of 127.0.0.1, as a collector's `otlp` receiver:
    the TraceService of opentelemetry-proto (PyPI's generated code of the OTLP protos), keeping
    every export request it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._arrived = threading.Condition()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def address_in(self, url: str) -> str:
        """`url` with this receiver's address as its host and port (its scheme kept)."""
        return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{self.port}"))

    def received(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def spans(self) -> list[ExportedSpan]:
        with self._arrived:
            requests = list(self.requests)
        return [
            ExportedSpan(
                name=span.name,
                kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_").lower(),
                attributes=_attributes(span.attributes),
                resource=_attributes(resource_spans.resource.attributes),
            )
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def exported_bytes(self) -> bytes:
        """Everything received, serialized: to look for what must never be exported."""
        with self._arrived:
            return b"".join(request.SerializeToString() for request in self.requests)

    def wait_for_span(self, matches: Callable[[ExportedSpan], bool], timeout: float = 20) -> ExportedSpan:
        """The first span received that `matches`, waiting for it (the gateway exports in batches,
        every 5 s by default)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [span for span in self.spans() if matches(span)]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no matching span in {timeout} s; received: {self.spans()}")
                self._arrived.wait(remaining)

    def stop(self) -> None:
        self.server.stop(grace=None)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 (the RPC's name)
        self.receiver.received(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def base_environment(home: Path) -> dict[str, str]:
    """What the pod has besides the chart's variables: PATH, an empty HOME, and the AWS identity
    IRSA / Pod Identity would inject (here the emulator's static key). Instance metadata is
    disabled, so the SDK never looks for it on the network."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_ACCESS_KEY_ID": EMULATOR_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": EMULATOR_SECRET_ACCESS_KEY,
    }


def mount_secrets(rendered: Rendered, external: dict[str, dict[str, bytes]], root: Path) -> dict[str, Path]:
    """Writes every volume the container mounts under `root`, as the kubelet would project it.
    Returns mountPath -> directory."""
    volumes = {v["name"]: v for v in rendered.pod_spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in rendered.container.get("volumeMounts", []):
        assert "subPath" not in mount, "a subPath mount never sees Secret updates"
        volume = volumes[mount["volumeName"] if "volumeName" in mount else mount["name"]]
        assert set(volume) == {"name", "secret"}, f"only Secret volumes are expected: {volume}"
        name = volume["secret"]["secretName"]
        data = rendered.secret_data(name)
        if data is None:
            assert name in external, f"the value set mounts Secret {name!r}, which the checks do not provide"
            data = external[name]
        items = volume["secret"].get("items") or [{"key": key, "path": key} for key in data]
        directory = root / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for item in items:
            assert item["key"] in data, f"Secret {name!r} has no key {item['key']!r}"
            (directory / item["path"]).write_bytes(data[item["key"]])
        mounts[mount["mountPath"]] = directory
    return mounts


def localize(env: dict[str, str], mounts: dict[str, Path]) -> dict[str, str]:
    """The rendered variables with mount paths pointing into the temporary directory and the
    listeners on loopback."""
    local = {}
    for name, value in env.items():
        for mount_path, directory in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(directory) + value[len(mount_path) :]
                assert Path(value).exists(), f"{name} names {env[name]}, which no mounted Secret key provides"
        if name in ("CPGW_LISTEN", "CPGW_METRICS_LISTEN"):
            assert value.startswith("0.0.0.0:"), f"{name}={value}: a pod must listen on all interfaces"
            value = "127.0.0.1:" + value.removeprefix("0.0.0.0:")
        local[name] = value
    for name in (
        "CPGW_TOKEN_FILE", "CPGW_TLS_CERT", "CPGW_TLS_KEY", "CPGW_TLS_CLIENT_CA", "CPGW_REDIS_PASSWORD_FILE",
        "CPGW_REDIS_TLS_CA", "CPGW_CLIENT_TOKEN_FILE",
    ):  # fmt: skip
        if name in env:
            assert local[name] != env[name], f"{name}={env[name]} is not under any volume mount"
    return local


def start(
    value_set: str,
    external_secrets: dict[str, dict[str, bytes]],
    pki: Pki,
    tmp_path: Path,
    started: list,
    override: dict[str, Any] | None = None,
    redis: RedisServer | None = None,
    otlp: OtlpReceiver | None = None,
    pod: PodIdentity = POD,
    environment: dict[str, str] | None = None,
) -> tuple[Gateway, str | None]:
    """Renders `value_set` and starts its gateway container as a process, in `pod`. Returns the
    gateway and the address it reported listening on (None if it exited instead). A value set
    with `rateLimit.backend: redis` needs `redis`: a `redis.url` in it is rendered with that
    server's address in place of its host and port (credentials and database kept); a URL from
    `redis.existingSecret` is whatever `external_secrets` holds. A value set with
    `tracing.otlpEndpoint` needs `otlp`, whose address its endpoint is rendered with (so no
    span leaves the machine). `environment` replaces rendered variables after all that (for a
    check of what the chart's schema keeps out)."""
    ports = {"server": {"grpcPort": free_port(), "metricsPort": free_port()}}
    override = merge(ports, override or {})
    values = merge(load_value_set(value_set), override)
    if values.get("rateLimit", {}).get("backend") == "redis":
        if redis is None:
            pytest.fail(f"value set {value_set!r} keeps its rate limits in Redis: pass start(redis=...)")
        redis_values = values.get("redis", {})
        if redis_values.get("url") and not redis_values.get("existingSecret"):
            override = merge(override, {"redis": {"url": redis.address_in(redis_values["url"])}})
    if endpoint := values.get("tracing", {}).get("otlpEndpoint"):
        if otlp is None:
            pytest.fail(f"value set {value_set!r} exports traces: pass start(otlp=...)")
        override = merge(override, {"tracing": {"otlpEndpoint": otlp.address_in(endpoint)}})
    rendered = render_value_set(value_set, override)
    container = rendered.container
    assert container["command"] == [BINARY_IN_IMAGE]
    mounts = mount_secrets(rendered, external_secrets, tmp_path / "root")
    env = localize(rendered.container_env(external_secrets, pod), mounts)
    env.update(environment or {})

    probe = container["readinessProbe"]
    probe_port = probe["grpc"]["port"] if "grpc" in probe else rendered.container_port(probe["tcpSocket"]["port"])
    for kind in ("startupProbe", "livenessProbe"):
        other = container[kind]
        other_port = other["grpc"]["port"] if "grpc" in other else rendered.container_port(other["tcpSocket"]["port"])
        assert other_port == probe_port
    assert probe_port == listen_port(env["CPGW_LISTEN"]) == ports["server"]["grpcPort"]
    metrics_port = listen_port(env["CPGW_METRICS_LISTEN"])
    assert metrics_port == rendered.container_port("metrics") == ports["server"]["metricsPort"]

    (tmp_path / "pki").mkdir(exist_ok=True)
    for name, pem in (("ca.crt", pki.ca_cert), ("client.crt", pki.client_cert), ("client.key", pki.client_key)):
        (tmp_path / "pki" / name).write_bytes(pem)

    process = Process(
        [str(GATEWAY_BIN), *container["args"]],
        {**base_environment(tmp_path / "home"), **env},
        cwd=tmp_path,
    )
    started.append(process)
    gateway = Gateway(
        process=process,
        rendered=rendered,
        env=env,
        probe_port=probe_port,
        metrics_port=metrics_port,
        files=tmp_path,
        tls=pki if "CPGW_TLS_CERT" in env else None,
        client_cert="CPGW_TLS_CLIENT_CA" in env,
        pod=pod,
    )
    return gateway, process.wait_ready()


def start_serving(*args, **kwargs) -> Gateway:
    gateway, address = start(*args, **kwargs)
    if address is None:
        pytest.fail(
            f"the rendered container exited with {gateway.process.process.returncode} instead of serving:\n"
            f"{gateway.process.output()}\nenvironment from the chart:\n{json.dumps(gateway.env, indent=2)}"
        )
    assert address == f"127.0.0.1:{gateway.probe_port}", address
    return gateway
