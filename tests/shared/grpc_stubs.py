"""Python code for the gateway's two protos, generated with grpcio-tools: what the gRPC tests
here (tests/clients) and the worker tests (tests/workers) call the gateway with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from gateway_process import REPO_ROOT

VENV_PYTHON = REPO_ROOT / ".tools/venv/bin/python"


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


def load_python_stubs(out: Path) -> SimpleNamespace:
    """Generates the code into `out` and imports it: `jobworker`, `jobworker_grpc`, `admin`,
    `admin_grpc`."""
    generate_python_stubs(out)
    from codepipeline.emulator.v1 import emulator_admin_pb2, emulator_admin_pb2_grpc
    from codepipeline.jobworker.v1 import job_worker_pb2, job_worker_pb2_grpc

    return SimpleNamespace(
        jobworker=job_worker_pb2,
        jobworker_grpc=job_worker_pb2_grpc,
        admin=emulator_admin_pb2,
        admin_grpc=emulator_admin_pb2_grpc,
    )
