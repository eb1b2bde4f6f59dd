"""Fixtures for the worker tests: the example workers built the way their READMEs say, the gateway
binary on port 0 with the in-process emulator, and clients for its two services."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import grpc
import pytest

from workers_support import (
    EXAMPLES,
    Emulator,
    GATEWAY_READY,
    NODE_MODULES,
    TOOLS,
    VENV_PYTHON,
    RunningBinary,
    WorkerCommand,
    WorkerProcess,
    load_python_stubs,
)

GATEWAY_ARGS = (
    "serve",
    "--listen", "127.0.0.1:0",
    "--upstream", "emulator",
    "--demo-jobs", "0",
    "--redispatch-after", "2s",
    "--metrics-listen", "127.0.0.1:0",
)  # fmt: skip


@pytest.fixture(scope="session")
def pb(tmp_path_factory) -> SimpleNamespace:
    """The generated Python modules: `jobworker`, `jobworker_grpc`, `admin`, `admin_grpc`."""
    return load_python_stubs(tmp_path_factory.mktemp("python-stubs"))


@pytest.fixture(scope="session")
def worker_commands(tmp_path_factory) -> dict[str, WorkerCommand]:
    """Each example worker, built once per session by its own build script (Python, Go and Java,
    side by side): Python and Go into a temporary dir (Go with its build cache in .tools), Java
    into .tools/workers/java, where a jar built from the same inputs is kept from run to run."""
    for tool in ("go", "protoc", "node", "java", "javac", "jar"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/install-worker-tools.sh")
    if not NODE_MODULES.joinpath("@grpc/grpc-js").is_dir():
        pytest.fail(f"{NODE_MODULES} has no @grpc/grpc-js: run scripts/install-worker-tools.sh")
    build = tmp_path_factory.mktemp("workers")

    out = {"python": build / "python", "go": build / "go", "java": TOOLS / "workers/java"}

    def run_build(language: str) -> str:
        """Runs the build; returns what it printed last: the PYTHONPATH entry, the binary, the jar."""
        result = subprocess.run(
            ["bash", str(EXAMPLES / language / "build.sh"), str(out[language])],
            capture_output=True,
            text=True,
            env={**os.environ, "GOCACHE": str(TOOLS / "go-cache")},
        )
        assert result.returncode == 0, f"{language} build failed:\n{result.stdout}{result.stderr}"
        return result.stdout.strip().splitlines()[-1]

    with ThreadPoolExecutor(max_workers=len(out)) as pool:
        python_path, go_binary, java_jar = pool.map(run_build, ("python", "go", "java"))
    return {
        "python": WorkerCommand(
            "python", [str(VENV_PYTHON), str(EXAMPLES / "python/worker.py")], {"PYTHONPATH": python_path}
        ),
        "go": WorkerCommand("go", [go_binary], {}),
        "node": WorkerCommand("node", ["node", str(EXAMPLES / "node/worker.js")], {"NODE_PATH": str(NODE_MODULES)}),
        # C1 only and the serial GC: about half the JVM's start-up CPU, on a machine that runs
        # several workers, the gateway and the tests at once.
        "java": WorkerCommand(
            "java", ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", java_jar], {}
        ),
    }


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., RunningBinary]]:
    """Starts the gateway on the emulator (no demo jobs, 2 s re-dispatch) with extra arguments;
    stops it with SIGTERM when the test ends."""
    started: list[RunningBinary] = []

    def start(*extra_args: str) -> RunningBinary:
        binary = RunningBinary(*GATEWAY_ARGS, *extra_args)
        started.append(binary)
        binary.wait_until_ready(GATEWAY_READY)
        return binary

    yield start
    for binary in started:
        binary.stop()


@pytest.fixture
def gateway(start_gateway) -> RunningBinary:
    return start_gateway()


@pytest.fixture
def start_worker(worker_commands) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts an example worker: start_worker(language, name, **environment). Whatever is still
    running when the test ends gets SIGTERM, then SIGKILL."""
    started: list[WorkerProcess] = []

    def start(language: str, name: str, **settings: object) -> WorkerProcess:
        worker = WorkerProcess(worker_commands[language], name, **settings)
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


@pytest.fixture
def channel(gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield channel


@pytest.fixture
def emulator(pb, channel) -> Emulator:
    return Emulator(pb, channel)


@pytest.fixture
def job_worker(pb, channel):
    return pb.jobworker_grpc.JobWorkerServiceStub(channel)
