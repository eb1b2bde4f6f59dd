"""What the worker tests share: generated stubs, the example workers as processes, the emulator's
admin service, and the google.rpc details of a failed call.

Shared by the worker and trace suites; the gateway binary and its launcher come from
gateway_process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import grpc
import pytest

from gateway_process import GATEWAY_BIN, GATEWAY_READY, REPO_ROOT, TOOLS_BIN, RunningBinary
from grpc_stubs import generate_python_stubs, load_python_stubs

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
# The bucket of the artifacts of the jobs made by Emulator.create_artifact_job.
ARTIFACT_BUCKET = "codepipeline-us-east-1-worker-tests"
MODES = ("poll", "stream")  # GATEWAY_MODE


def alternating_modes(offset: int) -> dict[str, str]:
    """Language -> GATEWAY_MODE, alternating: tests that run one worker per language run half of
    them in each mode, and with offsets 0 and 1 each language in both."""
    return {language: MODES[(index + offset) % len(MODES)] for index, language in enumerate(LANGUAGES)}

# Re-exported from gateway_process and grpc_stubs.
__all__ = [
    "GATEWAY_BIN", "GATEWAY_READY", "REPO_ROOT", "RunningBinary", "generate_python_stubs", "load_python_stubs",
]  # fmt: skip


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

    def set_faults(self, plan: str) -> None:
        self._call("SetFaults", self.pb.admin.SetFaultsRequest(plan=plan))

    def create_artifact_job(self, inputs: list[str], outputs: list[str], third_party: bool = False, **configuration: str):
        """A job of the demo action type (the demo third-party one if `third_party`, for a new
        client) whose input and output artifacts (by name) are objects of their own in the
        emulator's artifact store, as a pipeline run would lay them out; returns the
        CreateJobResponse: job_id (client_id, client_token)."""
        jw = self.pb.jobworker
        run = uuid.uuid4().hex[:12]

        def artifact(name: str):
            location = jw.S3ArtifactLocation(bucket_name=ARTIFACT_BUCKET, object_key=f"worker-tests/{run}/{name}.zip")
            return jw.Artifact(
                name=name,
                revision=f"{name}-{run}",
                location=jw.ArtifactLocation(type=jw.ARTIFACT_LOCATION_TYPE_S3, s3_location=location),
            )

        request = self.pb.admin.CreateJobRequest(
            action_type_id=self.demo_third_party_action_type if third_party else self.demo_action_type,
            configuration=configuration,
            input_artifacts=[artifact(name) for name in inputs],
            output_artifacts=[artifact(name) for name in outputs],
        )
        return self._call("CreateJob", request)

    def attach_input(self, job_id: str, name: str, data: bytes, content_type: str = "application/zip"):
        """Stores `data` as the job's input artifact `name` (what the previous action wrote)."""
        header = self.pb.admin.AttachInputArtifactHeader(job_id=job_id, artifact_name=name, content_type=content_type)
        chunk = self.pb.admin.AttachInputArtifactRequest

        def requests():
            yield chunk(header=header)
            for start in range(0, len(data), 1024 * 1024):
                yield chunk(chunk=data[start : start + 1024 * 1024])

        return self.stub.AttachInputArtifact(requests(), timeout=30)

    def read_output(self, job_id: str, name: str):
        """The job's output artifact `name` as the store holds it: (its metadata, its bytes).
        FAILED_PRECONDITION while nothing was written there."""
        request = self.pb.admin.ReadOutputArtifactRequest(job_id=job_id, artifact_name=name)
        first, *rest = self.stub.ReadOutputArtifact(request, timeout=30)
        assert first.WhichOneof("response") == "metadata", first
        return first.metadata, b"".join(message.chunk for message in rest)


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
