"""What the worker tests share: generated stubs, the example workers as processes, the emulator's
admin service, and the google.rpc details of a failed call.

The gateway binary and its launcher come from tests/clients/support.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))

from support import GATEWAY_BIN, GATEWAY_READY, REPO_ROOT, TOOLS_BIN, RunningBinary  # noqa: E402

TOOLS = REPO_ROOT / ".tools"
VENV_PYTHON = TOOLS / "venv/bin/python"
NODE_MODULES = TOOLS / "node/node_modules"
EXAMPLES = REPO_ROOT / "examples/workers"
GRPCURL = TOOLS_BIN / "grpcurl"
BUF = TOOLS_BIN / "buf"

# The line a worker prints once its signal handlers are in place: "polling for ..." (GATEWAY_MODE=poll)
# or "streaming for ..." (GATEWAY_MODE=stream).
WORKER_READY = re.compile(r"(?:polling|streaming) for \S+ with \d+ slots")
REPORTED = re.compile(r"(\S+): reported ([0-9a-f-]{36}) (succeeded|failed|continued)")
WORKER_STOP_TIMEOUT_SECONDS = 20

LANGUAGES = ("python", "go", "node", "java")
MODES = ("poll", "stream")  # GATEWAY_MODE


def alternating_modes(offset: int) -> dict[str, str]:
    """Language -> GATEWAY_MODE, alternating: tests that run one worker per language run half of
    them in each mode, and with offsets 0 and 1 each language in both."""
    return {language: MODES[(index + offset) % len(MODES)] for index, language in enumerate(LANGUAGES)}

__all__ = ["GATEWAY_BIN", "GATEWAY_READY", "REPO_ROOT", "RunningBinary"]  # re-exported from tests/clients


def generate_python_stubs(out: Path) -> Path:
    """Generates Python code for both of the gateway's protos into `out` and puts it on sys.path."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            VENV_PYTHON, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT / 'proto'}", f"-I{REPO_ROOT / 'proto-deps'}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            "codepipeline/jobworker/v1/job_worker.proto", "codepipeline/emulator/v1/emulator_admin.proto",
        ],
        check=True,
    )  # fmt: skip
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return out


class Emulator:
    """The emulator's admin service, for setting up jobs and reading what workers did. Its calls
    share the gateway's rate limit with the workers, so they wait out RESOURCE_EXHAUSTED."""

    def __init__(self, pb: SimpleNamespace, channel: grpc.Channel) -> None:
        self.pb = pb
        self.stub = pb.admin_grpc.EmulatorAdminServiceStub(channel)
        self.demo_action_type = pb.jobworker.ActionTypeId(
            category=pb.jobworker.ACTION_CATEGORY_BUILD,
            owner=pb.jobworker.ACTION_OWNER_CUSTOM,
            provider="DemoBuilder",
            version="1",
        )
        self.demo_third_party_action_type = pb.jobworker.ActionTypeId(
            category=pb.jobworker.ACTION_CATEGORY_BUILD,
            owner=pb.jobworker.ACTION_OWNER_THIRD_PARTY,
            provider="DemoPartner",
            version="1",
        )

    def _call(self, rpc: str, request):
        deadline = time.monotonic() + 30
        while True:
            try:
                return getattr(self.stub, rpc)(request, timeout=10)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_job(self, **configuration: str) -> str:
        request = self.pb.admin.CreateJobRequest(action_type_id=self.demo_action_type, configuration=configuration)
        return self._call("CreateJob", request).job_id

    def create_third_party_job(self, client_id: str = "", client_token: str = "", **configuration: str):
        """A job of the demo third-party action type for `client_id` with `client_token` (new ones
        when empty); returns the CreateJobResponse: job_id, client_id, client_token."""
        request = self.pb.admin.CreateJobRequest(
            action_type_id=self.demo_third_party_action_type,
            configuration=configuration,
            client_id=client_id,
            client_token=client_token,
        )
        return self._call("CreateJob", request)

    def job(self, job_id: str):
        return self._call("GetJob", self.pb.admin.GetJobRequest(job_id=job_id)).job

    def jobs(self) -> list:
        return list(self._call("ListJobs", self.pb.admin.ListJobsRequest()).jobs)

    def call_counts(self) -> dict[str, int]:
        return dict(self._call("GetCallCounts", self.pb.admin.GetCallCountsRequest()).calls)


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to every unary call of a grpcio channel."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details._replace(metadata=[*(details.metadata or ()), self.metadata]), request)


@dataclass
class WorkerCommand:
    """How to start one language's example worker: argv plus extra environment."""

    language: str
    argv: list[str]
    env: dict[str, str]


class WorkerProcess:
    """An example worker running as a process; its stdout and stderr go to one temporary file."""

    def __init__(self, command: WorkerCommand, name: str, **settings: object) -> None:
        self.name = name
        self.language = command.language
        self._log = tempfile.NamedTemporaryFile("w+", prefix=f"{name}-", suffix=".log", errors="replace")
        env = {**os.environ, **command.env, "WORKER_NAME": name}
        env.update({key: str(value) for key, value in settings.items()})
        self.process = subprocess.Popen(
            command.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )

    def output(self) -> str:
        self._log.flush()
        with open(self._log.name, errors="replace") as log:
            return log.read()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(self.output()):
                return
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        pytest.fail(f"worker {self.name} did not print {pattern.pattern!r} within {timeout} s:\n{self.output()}")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then the exit status; a worker that outlives the timeout is killed and fails.
        A worker still starting up is first given time to get ready (to set up its SIGTERM handler)."""
        if self.process.poll() is None and not WORKER_READY.search(self.output()):
            self.wait_for(WORKER_READY)
        self.terminate()
        try:
            return self.process.wait(timeout=WORKER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker {self.name} ignored SIGTERM for {WORKER_STOP_TIMEOUT_SECONDS} s:\n{self.output()}")

    def reported(self) -> list[tuple[str, str]]:
        """(job id, result) for every result the worker says it reported."""
        return [(job_id, result) for name, job_id, result in REPORTED.findall(self.output()) if name == self.name]


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.1,
    explain: Callable[[], str] = lambda: "",
):
    """Calls `condition` until it returns something true, and returns that; fails the test after
    `timeout` seconds, with what `explain` says."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{explain()}")
        time.sleep(interval)


def status_details(err) -> dict[str, object]:
    """The google.rpc details of a failed grpcio call, by message name, decoded from the
    `grpc-status-details-bin` trailer. Checks that the Status in the trailer agrees with the call."""
    from google.rpc import error_details_pb2, status_pb2

    trailer = dict(err.trailing_metadata() or ())
    assert "grpc-status-details-bin" in trailer, f"no grpc-status-details-bin trailer: {err}"
    status = status_pb2.Status.FromString(trailer["grpc-status-details-bin"])
    assert status.code == err.code().value[0]
    assert status.message == err.details()
    decoded: dict[str, object] = {}
    for detail in status.details:
        name = detail.type_url.removeprefix("type.googleapis.com/google.rpc.")
        message = getattr(error_details_pb2, name)()
        assert detail.Unpack(message), detail.type_url
        decoded[name] = message
    return decoded
