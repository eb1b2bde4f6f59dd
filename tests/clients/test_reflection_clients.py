"""Off-the-shelf gRPC clients against the gateway, with no proto files: all they know about the
API they learn through server reflection.

grpcurl 1.8.6 speaks only reflection v1alpha; buf curl is made to use reflection v1.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from support import TOOLS_BIN

GRPCURL = TOOLS_BIN / "grpcurl"
BUF = TOOLS_BIN / "buf"
CLIENT_TIMEOUT_SECONDS = 30

JOB_WORKER_SERVICE = "codepipeline.jobworker.v1.JobWorkerService"
EMULATOR_ADMIN_SERVICE = "codepipeline.emulator.v1.EmulatorAdminService"
JOB_WORKER_RPCS = {"PollForJobs", "AcknowledgeJob", "GetJobDetails", "PutJobSuccessResult", "PutJobFailureResult"}

DEMO_POLL_REQUEST = {
    "actionTypeId": {
        "category": "ACTION_CATEGORY_BUILD",
        "owner": "ACTION_OWNER_CUSTOM",
        "provider": "DemoBuilder",
        "version": "1",
    },
    "maxBatchSize": 1,
}


def run(*command: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=CLIENT_TIMEOUT_SECONDS,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stderr}{result.stdout}"
    return result.stdout


def grpcurl(address: str, *args: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
    request = ["-d", json.dumps(data)] if data is not None else []
    return run(GRPCURL, "-plaintext", *request, address, *args)


def buf_curl(url: str, *flags: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
    request = ["-d", json.dumps(data)] if data is not None else []
    return run(
        BUF, "curl", "--http2-prior-knowledge", "--protocol", "grpc", "--reflect-protocol", "grpc-v1",
        *request, *flags, url,
    )  # fmt: skip


def only_job(response: str) -> dict:
    jobs = json.loads(response).get("jobs", [])
    assert len(jobs) == 1, f"expected one job, got {response}"
    return jobs[0]


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    for tool in (GRPCURL, BUF):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: run scripts/install-test-tools.sh")


def test_grpcurl_lists_the_job_worker_service(gateway):
    services = succeeded(grpcurl(gateway.address, "list")).split()
    assert JOB_WORKER_SERVICE in services
    assert EMULATOR_ADMIN_SERVICE in services


def test_grpcurl_describes_the_five_job_worker_rpcs(gateway):
    description = succeeded(grpcurl(gateway.address, "describe", JOB_WORKER_SERVICE))
    assert set(re.findall(r"\brpc (\w+)", description)) == JOB_WORKER_RPCS


def test_grpcurl_polls_and_acknowledges_a_job_and_a_wrong_nonce_is_aborted(gateway):
    job = only_job(succeeded(grpcurl(gateway.address, f"{JOB_WORKER_SERVICE}/PollForJobs", data=DEMO_POLL_REQUEST)))
    assert job["id"] and job["nonce"]

    acknowledge = f"{JOB_WORKER_SERVICE}/AcknowledgeJob"
    acknowledged = succeeded(grpcurl(gateway.address, acknowledge, data={"jobId": job["id"], "nonce": job["nonce"]}))
    assert json.loads(acknowledged) == {"status": "JOB_STATUS_IN_PROGRESS"}

    refused = grpcurl(gateway.address, acknowledge, data={"jobId": job["id"], "nonce": job["nonce"] + "-not-mine"})
    assert refused.returncode != 0
    assert "Code: Aborted" in refused.stderr, refused.stderr


def test_grpcurl_health_check_reports_serving(gateway):
    health = succeeded(grpcurl(gateway.address, "grpc.health.v1.Health/Check", data={}))
    assert json.loads(health) == {"status": "SERVING"}


def test_buf_curl_lists_the_five_job_worker_methods_through_reflection_v1(gateway):
    methods = succeeded(buf_curl(f"http://{gateway.address}", "--list-methods")).split()
    job_worker_methods = {method for method in methods if method.startswith(f"{JOB_WORKER_SERVICE}/")}
    assert job_worker_methods == {f"{JOB_WORKER_SERVICE}/{rpc}" for rpc in JOB_WORKER_RPCS}


def test_buf_curl_acknowledges_a_freshly_polled_job(gateway):
    base = f"http://{gateway.address}/{JOB_WORKER_SERVICE}"
    job = only_job(succeeded(buf_curl(f"{base}/PollForJobs", data=DEMO_POLL_REQUEST)))
    acknowledged = succeeded(buf_curl(f"{base}/AcknowledgeJob", data={"jobId": job["id"], "nonce": job["nonce"]}))
    assert json.loads(acknowledged) == {"status": "JOB_STATUS_IN_PROGRESS"}


def test_the_gateway_exits_cleanly_on_sigterm(gateway):
    assert gateway.stop() == 0
