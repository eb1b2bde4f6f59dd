"""What the chart checks share: the chart, rendering it with Helm v4 (helm-python-sdk), the value
sets in values/, and running the real gateway binary the way a rendered container would.

The binary is `target/debug/codepipeline-gateway` unless `GATEWAY_BIN` names another one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import queue
import re
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "codepipeline-gateway"
VALUES_DIR = Path(__file__).resolve().parent / "values"
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN", REPO_ROOT / "target/debug/codepipeline-gateway"))
TOOLS_BIN = REPO_ROOT / ".tools/bin"

RELEASE = "gw"
NAMESPACE = "ci"
FULLNAME = f"{RELEASE}-codepipeline-gateway"
SERVICE_HOST = f"{FULLNAME}.{NAMESPACE}.svc"

# The Kubernetes version the rendered objects are validated against (kubernetes-validate's
# offline schemas): a current release. The chart's declared minimum is checked too.
KUBERNETES_VERSION = "1.34"

VALUE_SETS = sorted(path.stem for path in VALUES_DIR.glob("*.yaml"))

READY = re.compile(r"grpc listening on (\S+)")
READY_TIMEOUT_SECONDS = 30

# The emulator's identity (its defaults), standing in for the AWS identity that IRSA or EKS Pod
# Identity would inject into the pod.
EMULATOR_ACCESS_KEY_ID = "AKIDEMULATOR00000000"
EMULATOR_SECRET_ACCESS_KEY = "emulator-secret-access-key"

HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def cargo_version() -> str:
    return tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]


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

    def container_env(self) -> dict[str, str]:
        """The gateway container's environment as the kubelet builds it: envFrom sources in
        order, then env entries (later ones win)."""
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
            assert "value" in entry, f"the drift check cannot resolve env entry {entry}"
            env[entry["name"]] = entry["value"]
        return env


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
        elif flags and (match := re.search(r"\[env: ([A-Z0-9_]+)=", line)):
            flags[-1]["env"] = match.group(1)
        elif flags and (match := re.search(r"\[default: ([^\]]+)\]", line)):
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


def require_binary() -> None:
    if not GATEWAY_BIN.is_file():
        pytest.fail(f"{GATEWAY_BIN} does not exist: run `cargo build` first, or set GATEWAY_BIN")


class Process:
    """The binary started with some arguments and environment; stdout drained by a thread,
    stderr kept in a file, so both can be shown when something goes wrong."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        require_binary()
        self.args = args
        self.env = env
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr = tempfile.TemporaryFile("w+", errors="replace")
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            errors="replace",
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> str | None:
        """The address from the `grpc listening on ADDR` line, or None if the process exited
        first. Fails the test if neither happens within `timeout`."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.process.wait(timeout=10)
                return None
            self._stdout.append(line)
            if match := READY.search(line):
                return match.group(1)
        pytest.fail(f"the gateway did not report `grpc listening on` in {timeout} s\n{self.output()}")

    def wait_url(self, pattern: re.Pattern[str], timeout: float = READY_TIMEOUT_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self._stdout.append(line)
            if match := pattern.search(line):
                return match.group(1)
        pytest.fail(f"`{' '.join(self.args)}` did not become ready\n{self.output()}")

    def stop(self) -> None:
        """Kills the process: a rendered gateway would spend its lame-duck period on SIGTERM, and
        the one check of graceful shutdown sends SIGTERM itself."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def output(self) -> str:
        self._stderr.seek(0)
        stdout = "\n".join(self._stdout)
        return f"--- stdout ---\n{stdout}\n--- stderr ---\n{self._stderr.read()}"
