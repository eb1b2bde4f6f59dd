"""Fixtures for the trace tests: a real OTLP receiver on port 0, the gateway binary (on the
in-process emulator, or on the AWS SDK path in front of `codepipeline-gateway emulator`), and the
example Python worker, built as its README says, run with a recorder of the secrets it is handed.

Nothing here uses a fixed port or shared files, so tests (and this suite beside others) can run in
parallel. OTEL_* variables are cleared from the environment the binaries inherit: a gateway
exports only when a test gives it `--otlp-endpoint`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from otlp_receiver import OtlpReceiver
from traces_support import ADMIN_TOKEN, RECORD_SECRETS, TOKENS, WORKER_TOKEN, RecordedWorker
from workers_support import (
    EXAMPLES,
    GATEWAY_READY,
    VENV_PYTHON,
    BearerToken,
    Emulator,
    RunningBinary,
    WorkerCommand,
    generate_python_stubs,
)

from gateway_process import (
    EMULATOR_ACCESS_KEY_ID,
    EMULATOR_READY,
    EMULATOR_REGION,
    EMULATOR_SECRET_ACCESS_KEY,
)

COMMON_GATEWAY_ARGS = (
    "serve",
    "--listen", "127.0.0.1:0",
    "--metrics-listen", "127.0.0.1:0",
)  # fmt: skip


@pytest.fixture(autouse=True)
def no_inherited_otel_settings(monkeypatch) -> None:
    """The binaries inherit the test's environment: none of it may turn their tracing on."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pb(tmp_path_factory) -> SimpleNamespace:
    generate_python_stubs(tmp_path_factory.mktemp("python-stubs"))
    from codepipeline.emulator.v1 import emulator_admin_pb2, emulator_admin_pb2_grpc
    from codepipeline.jobworker.v1 import job_worker_pb2, job_worker_pb2_grpc

    return SimpleNamespace(
        jobworker=job_worker_pb2,
        jobworker_grpc=job_worker_pb2_grpc,
        admin=emulator_admin_pb2,
        admin_grpc=emulator_admin_pb2_grpc,
    )


@pytest.fixture(scope="session")
def python_worker_path(tmp_path_factory) -> str:
    """The PYTHONPATH entry of the Python worker's generated code, built by its build script."""
    out = tmp_path_factory.mktemp("python-worker")
    result = subprocess.run(
        ["bash", str(EXAMPLES / "python/build.sh"), str(out)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"python worker build failed:\n{result.stdout}{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def token_file(tmp_path) -> Path:
    """The gateway's token file: the worker's and the admin's tokens, every RPC allowed."""
    path = tmp_path / "tokens.toml"
    path.write_text(
        "".join(
            f'[[clients]]\nid = "{client_id}"\n'
            f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nallowed_rpcs = ["*"]\n\n'
            for client_id, token in TOKENS.items()
        )
    )
    return path


@pytest.fixture
def launch() -> Iterator[Callable[..., RunningBinary]]:
    """launch(*args, ready=pattern): the binary, once it printed its ready line; stopped (SIGTERM)
    when the test ends, if the test has not stopped it."""
    started: list[RunningBinary] = []

    def start(*args: str, ready=GATEWAY_READY) -> RunningBinary:
        binary = RunningBinary(*args)
        started.append(binary)
        binary.wait_until_ready(ready)
        return binary

    yield start
    for binary in started:
        binary.stop()


@pytest.fixture
def emulator_gateway(launch, token_file) -> Callable[..., RunningBinary]:
    """gateway(*extra_args): `serve --upstream emulator`, bearer tokens from the token file."""

    def start(*extra_args: str) -> RunningBinary:
        return launch(
            *COMMON_GATEWAY_ARGS, "--upstream", "emulator", "--demo-jobs", "0", "--token-file", str(token_file),
            *extra_args,
        )  # fmt: skip

    return start


@pytest.fixture
def sdk_gateway(launch, token_file, monkeypatch) -> Callable[..., tuple[RunningBinary, str]]:
    """gateway(*extra_args): `codepipeline-gateway emulator` in its own process, and in front of
    it `serve --upstream aws --aws-endpoint-url <its front>`, the real AWS SDK path, with its
    credentials. Returns the gateway and the emulator's address (host:port, where its admin
    service is served)."""

    def start(*extra_args: str) -> tuple[RunningBinary, str]:
        emulator = launch(
            "emulator", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--demo-jobs", "0",
            "--access-key-id", EMULATOR_ACCESS_KEY_ID, "--secret-access-key", EMULATOR_SECRET_ACCESS_KEY,
            "--region", EMULATOR_REGION,
            ready=EMULATOR_READY,
        )  # fmt: skip
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", EMULATOR_ACCESS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EMULATOR_SECRET_ACCESS_KEY)
        monkeypatch.setenv("AWS_REGION", EMULATOR_REGION)
        gateway = launch(
            *COMMON_GATEWAY_ARGS, "--upstream", "aws", "--aws-endpoint-url", emulator.address,
            "--token-file", str(token_file), *extra_args,
        )  # fmt: skip
        return gateway, emulator.address.removeprefix("http://")

    return start


@pytest.fixture
def admin(pb) -> Iterator[Callable[[str, bool], Emulator]]:
    """admin(address, authenticated=True): the emulator's admin service at `address` (through a
    gateway: with the admin's bearer token)."""
    channels: list[grpc.Channel] = []

    def connect(address: str, authenticated: bool = True) -> Emulator:
        channel = grpc.insecure_channel(address)
        channels.append(channel)
        if authenticated:
            channel = grpc.intercept_channel(channel, BearerToken(ADMIN_TOKEN))
        return Emulator(pb, channel)

    yield connect
    for channel in channels:
        channel.close()


@pytest.fixture
def start_worker(python_worker_path, tmp_path) -> Iterator[Callable[..., RecordedWorker]]:
    """start_worker(name, **environment): the Python worker polling, one slot, its bearer token
    set; SIGTERM (then SIGKILL) when the test ends."""
    started: list[RecordedWorker] = []

    def start(name: str, **settings: object) -> RecordedWorker:
        secrets_file = tmp_path / f"{name}-secrets.json"
        command = WorkerCommand(
            "python",
            [str(VENV_PYTHON), str(RECORD_SECRETS), str(secrets_file), str(EXAMPLES / "python/worker.py")],
            {"PYTHONPATH": python_worker_path},
        )
        defaults = {"GATEWAY_MODE": "poll", "GATEWAY_TOKEN": WORKER_TOKEN, "MAX_IN_FLIGHT": 1, "POLL_INTERVAL": 0.3}
        worker = RecordedWorker(command, name, secrets_file, **{**defaults, **settings})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.terminate()
    for worker in started:
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()

