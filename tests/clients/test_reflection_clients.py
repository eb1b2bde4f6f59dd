"""Off-the-shelf gRPC clients against the gateway, with no proto files: all they know about the
API they learn through server reflection.

grpcurl 1.8.6 speaks only reflection v1alpha; buf curl is made to use reflection v1.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import GATEWAY_ARGS
from support import GATEWAY_READY, REPO_ROOT, TOOLS_BIN

GRPCURL = TOOLS_BIN / "grpcurl"
BUF = TOOLS_BIN / "buf"
CLIENT_TIMEOUT_SECONDS = 30

JOB_WORKER_SERVICE = "codepipeline.jobworker.v1.JobWorkerService"
EMULATOR_ADMIN_SERVICE = "codepipeline.emulator.v1.EmulatorAdminService"
THIRD_PARTY_SERVICE = "codepipeline.jobworker.v1.ThirdPartyJobWorkerService"
JOB_WORKER_RPCS = {
    "PollForJobs", "AcknowledgeJob", "GetJobDetails", "PutJobSuccessResult", "PutJobFailureResult", "StreamJobs",
}  # fmt: skip
THIRD_PARTY_RPCS = {
    "PollForThirdPartyJobs", "AcknowledgeThirdPartyJob", "GetThirdPartyJobDetails",
    "PutThirdPartyJobSuccessResult", "PutThirdPartyJobFailureResult",
}  # fmt: skip

DEMO_POLL_REQUEST = {
    "actionTypeId": {
        "category": "ACTION_CATEGORY_BUILD",
        "owner": "ACTION_OWNER_CUSTOM",
        "provider": "DemoBuilder",
        "version": "1",
    },
    "maxBatchSize": 1,
}
DEMO_THIRD_PARTY_POLL_REQUEST = {
    "actionTypeId": DEMO_POLL_REQUEST["actionTypeId"] | {"owner": "ACTION_OWNER_THIRD_PARTY", "provider": "DemoPartner"},
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
    assert THIRD_PARTY_SERVICE in services
    assert EMULATOR_ADMIN_SERVICE in services


@pytest.mark.parametrize(
    ("service", "rpcs"), [(JOB_WORKER_SERVICE, JOB_WORKER_RPCS), (THIRD_PARTY_SERVICE, THIRD_PARTY_RPCS)]
)
def test_grpcurl_describes_every_rpc_of_the_job_worker_services(gateway, service, rpcs):
    description = succeeded(grpcurl(gateway.address, "describe", service))
    assert set(re.findall(r"\brpc (\w+)", description)) == rpcs


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


def test_buf_curl_lists_every_job_worker_method_through_reflection_v1(gateway):
    methods = set(succeeded(buf_curl(f"http://{gateway.address}", "--list-methods")).split())
    for service, rpcs in [(JOB_WORKER_SERVICE, JOB_WORKER_RPCS), (THIRD_PARTY_SERVICE, THIRD_PARTY_RPCS)]:
        listed = {method for method in methods if method.startswith(f"{service}/")}
        assert listed == {f"{service}/{rpc}" for rpc in rpcs}


def test_grpcurl_runs_a_third_party_job_with_the_token_held_by_the_gateway(launch):
    """The grpcurl session of docs/grpcurl-session.md: the worker never sends the client token."""
    gateway = launch(*GATEWAY_ARGS, "--client-token-file", str(REPO_ROOT / "examples/client-tokens.toml"), ready=GATEWAY_READY)
    call = lambda rpc, data: grpcurl(gateway.address, f"{THIRD_PARTY_SERVICE}/{rpc}", data=data)  # noqa: E731
    job = only_job(succeeded(call("PollForThirdPartyJobs", DEMO_THIRD_PARTY_POLL_REQUEST)))
    assert set(job) == {"clientId", "jobId"}
    named = {"jobId": job["jobId"], "clientId": job["clientId"]}

    details = json.loads(succeeded(call("GetThirdPartyJobDetails", named)))["jobDetails"]
    assert details["id"] == job["jobId"] and details["nonce"]
    acknowledged = json.loads(succeeded(call("AcknowledgeThirdPartyJob", named | {"nonce": details["nonce"]})))
    assert acknowledged == {"status": "JOB_STATUS_IN_PROGRESS"}
    succeeded(call("PutThirdPartyJobSuccessResult", named | {"executionDetails": {"summary": "done by grpcurl"}}))

    again = call("PutThirdPartyJobSuccessResult", named)
    assert again.returncode != 0 and "Code: FailedPrecondition" in again.stderr, again.stderr
    stranger = call("GetThirdPartyJobDetails", {"jobId": job["jobId"], "clientId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"})
    assert "Code: FailedPrecondition" in stranger.stderr and "client-token file has no token" in stranger.stderr


def test_buf_curl_acknowledges_a_freshly_polled_job(gateway):
    base = f"http://{gateway.address}/{JOB_WORKER_SERVICE}"
    job = only_job(succeeded(buf_curl(f"{base}/PollForJobs", data=DEMO_POLL_REQUEST)))
    acknowledged = succeeded(buf_curl(f"{base}/AcknowledgeJob", data={"jobId": job["id"], "nonce": job["nonce"]}))
    assert json.loads(acknowledged) == {"status": "JOB_STATUS_IN_PROGRESS"}


def test_the_gateway_exits_cleanly_on_sigterm(gateway):
    assert gateway.stop() == 0
