"""The gateway answers a call at its deadline before the caller's own library does, for every
mainstream gRPC client: Python (grpcio, C-core, which rounds `grpc-timeout` up to three
significant figures), Go (grpc-go), Java (grpc-java) and Node (@grpc/grpc-js). The answer is the
gateway's DEADLINE_EXCEEDED with ErrorInfo UPSTREAM_TIMEOUT and `indeterminate`, which a worker
needs to know that the acknowledgement may have been applied; the library's own carries no
details. The upstream (the emulator) holds every AcknowledgeJob far longer than the deadlines.

Each non-Python client is a small probe program (tests/workers/deadline_probes/) built against the
same generated code and libraries as its example worker.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from workers_support import NODE_MODULES, TOOLS, status_details

PROBES = Path(__file__).resolve().parent / "deadline_probes"
DEADLINES_MS = (1000, 1500, 2000, 2500)
# The compile-only jars the Java worker's build names (javax.annotation.Generated and friends).
JAVA_COMPILE_ONLY = ("geronimo-annotation-1.3-spec", "jsr305", "error_prone_annotations")


@pytest.fixture(scope="module")
def probes(worker_commands, tmp_path_factory) -> dict[str, list[str]]:
    """language -> the command that runs its probe (arguments follow)."""
    out = tmp_path_factory.mktemp("deadline-probes")
    go_build = Path(worker_commands["go"].argv[0]).parent
    go_binary = out / "probe-go"
    subprocess.run(
        ["go", "build", "-o", str(go_binary), str(PROBES / "probe.go")],
        check=True,
        env={
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": f"{go_build / 'gopath'}:/usr/share/gocode",
            "GOFLAGS": "",
            "GOCACHE": str(TOOLS / "go-cache"),
        },
    )
    worker_jar = worker_commands["java"].argv[-1]
    compile_path = ":".join([worker_jar, *(f"/usr/share/java/{jar}.jar" for jar in JAVA_COMPILE_ONLY)])
    subprocess.run(
        ["javac", "-J-XX:TieredStopAtLevel=1", "--release", "17", "-proc:none", "-cp", compile_path,
         "-d", str(out), str(PROBES / "Probe.java")],
        check=True,
    )  # fmt: skip
    return {
        "go": [str(go_binary)],
        "java": ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", f"{out}:{worker_jar}", "Probe"],
        "node": ["node", str(PROBES / "probe.js")],
    }


def python_probe(address: str, job_id: str, nonce: str, timeout_ms: int, pb) -> dict:
    with grpc.insecure_channel(address) as channel:
        stub = pb.jobworker_grpc.JobWorkerServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        try:
            stub.AcknowledgeJob(pb.jobworker.AcknowledgeJobRequest(job_id=job_id, nonce=nonce), timeout=timeout_ms / 1000)
            return {"code": "OK", "reason": "", "indeterminate": ""}
        except grpc.RpcError as err:
            trailer = dict(err.trailing_metadata() or ())
            if "grpc-status-details-bin" not in trailer:
                return {"code": err.code().name, "reason": "", "indeterminate": ""}
            info = status_details(err)["ErrorInfo"]
            return {"code": err.code().name, "reason": info.reason, "indeterminate": info.metadata["indeterminate"]}


@pytest.mark.parametrize("language", ("python", "go", "java", "node"))
def test_a_call_at_its_deadline_gets_the_gateways_answer_before_the_clients_own(
    language, probes, start_gateway, pb
):
    gateway = start_gateway()
    with grpc.insecure_channel(gateway.address) as channel:
        from workers_support import Emulator

        emulator = Emulator(pb, channel)
        job_id = emulator.create_job()
        stub = pb.jobworker_grpc.JobWorkerServiceStub(channel)
        jobs = stub.PollForJobs(
            pb.jobworker.PollForJobsRequest(action_type_id=emulator.demo_action_type, max_batch_size=1), timeout=10
        ).jobs
        assert [job.id for job in jobs] == [job_id]
        nonce = jobs[0].nonce
        emulator.set_faults("AcknowledgeJob:latency=10s")

    answers = {}
    for timeout_ms in DEADLINES_MS:
        if language == "python":
            answers[timeout_ms] = python_probe(gateway.address, job_id, nonce, timeout_ms, pb)
        else:
            result = subprocess.run(
                [*probes[language], gateway.address, job_id, nonce, str(timeout_ms)],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            )
            assert result.returncode == 0, result.stderr
            answers[timeout_ms] = json.loads(result.stdout.strip().splitlines()[-1])
    for timeout_ms, answer in answers.items():
        # Go names codes DeadlineExceeded, the others DEADLINE_EXCEEDED.
        code = answer["code"].replace("_", "").lower()
        assert (code, answer["reason"], answer["indeterminate"]) == (
            "deadlineexceeded", "UPSTREAM_TIMEOUT", "true",
        ), f"{language} with a {timeout_ms} ms deadline: {answer} (all: {answers})"  # fmt: skip
