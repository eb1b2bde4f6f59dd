"""Three clients no one here wrote run every job-worker RPC through the gateway and read the
google.rpc details of its errors: grpcurl 1.8.6 (learning the API through reflection v1alpha),
`buf curl` (reflection v1) and Python grpcio (code generated from the proto, details decoded from
the `grpc-status-details-bin` trailer). The same test body drives each client, so they are held
to the same answers.

(tests/clients/test_reflection_clients.py lists, describes, polls and acknowledges; this adds the
rest of the loop and the error details.)
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from workers_support import BUF, GRPCURL, status_details

JOB_WORKER_SERVICE = "codepipeline.jobworker.v1.JobWorkerService"
CLIENTS = ("grpcurl", "buf-curl", "grpcio")
DEMO_ACTION_TYPE = {
    "category": "ACTION_CATEGORY_BUILD",
    "owner": "ACTION_OWNER_CUSTOM",
    "provider": "DemoBuilder",
    "version": "1",
}


class CallFailed(Exception):
    """A call answered with an error status: `code` is its name (NOT_FOUND), `details` the
    google.rpc details by message name, each as protobuf JSON (camelCase fields)."""

    def __init__(self, code: str, message: str, details: dict[str, dict]) -> None:
        super().__init__(f"{code}: {message} {details}")
        self.code, self.message, self.details = code, message, details


def run(*command: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )


class Grpcurl:
    """grpcurl 1.8.6: reflection v1alpha; -format-error prints the status and its details as JSON."""

    def __init__(self, address: str, pb) -> None:
        self.address = address

    def __call__(self, rpc: str, request: dict) -> dict:
        result = run(
            GRPCURL, "-plaintext", "-format-error", "-d", json.dumps(request), self.address,
            f"{JOB_WORKER_SERVICE}/{rpc}",
        )  # fmt: skip
        if result.returncode == 0:
            return json.loads(result.stdout)
        error = json.loads(result.stderr)
        details = {}
        for detail in error.get("details", []):
            detail = dict(detail)
            details[detail.pop("@type").removeprefix("type.googleapis.com/")] = detail
        code = next(code.name for code in grpc.StatusCode if code.value[0] == error["code"])
        raise CallFailed(code, error["message"], details)


class BufCurl:
    """buf curl: reflection v1; prints an error's details as type name plus base64 bytes, which
    are decoded here with the google.rpc messages."""

    def __init__(self, address: str, pb) -> None:
        self.url = f"http://{address}/{JOB_WORKER_SERVICE}"

    def __call__(self, rpc: str, request: dict) -> dict:
        result = run(
            BUF, "curl", "--http2-prior-knowledge", "--protocol", "grpc", "--reflect-protocol", "grpc-v1",
            "-d", json.dumps(request), f"{self.url}/{rpc}",
        )  # fmt: skip
        if result.returncode == 0:
            return json.loads(result.stdout)
        error = json.loads(result.stderr)
        details = {}
        for detail in error.get("details", []):
            name = detail["type"]
            message = getattr(error_details_pb2, name.removeprefix("google.rpc."))()
            message.ParseFromString(base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4)))
            details[name] = json_format.MessageToDict(message)
        raise CallFailed(error["code"].upper(), error["message"], details)


class Grpcio:
    """Python grpcio with generated stubs; requests and responses in protobuf JSON like the others."""

    def __init__(self, address: str, pb) -> None:
        self.pb = pb
        self.channel = grpc.insecure_channel(address)
        self.stub = pb.jobworker_grpc.JobWorkerServiceStub(self.channel)

    def __call__(self, rpc: str, request: dict) -> dict:
        message = json_format.ParseDict(request, getattr(self.pb.jobworker, f"{rpc}Request")())
        try:
            response = getattr(self.stub, rpc)(message, timeout=10)
        except grpc.RpcError as err:
            details = {
                f"google.rpc.{name}": json_format.MessageToDict(detail) for name, detail in status_details(err).items()
            }
            raise CallFailed(err.code().name, err.details(), details) from None
        return json_format.MessageToDict(response)


CLIENT_TYPES = {"grpcurl": Grpcurl, "buf-curl": BufCurl, "grpcio": Grpcio}


@pytest.fixture(params=CLIENTS)
def client(request, pb, gateway):
    for tool in (GRPCURL, BUF):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: run scripts/install-test-tools.sh")
    return CLIENT_TYPES[request.param](gateway.address, pb)


def failure(call, rpc: str, request: dict) -> CallFailed:
    with pytest.raises(CallFailed) as failed:
        call(rpc, request)
    return failed.value


def test_every_job_worker_rpc_through_the_whole_loop(client, emulator, pb):
    built = emulator.create_job(ProjectName="conformance", Outcome="succeed")
    broken = emulator.create_job(ProjectName="conformance", Outcome="fail")

    polled = client("PollForJobs", {"actionTypeId": DEMO_ACTION_TYPE, "maxBatchSize": 2})["jobs"]
    assert {job["id"] for job in polled} == {built, broken}
    for job in polled:
        assert job["nonce"] and job["accountId"] == "123456789012"
        assert job["data"]["actionConfiguration"]["configuration"]["ProjectName"] == "conformance"
        assert job["data"]["artifactCredentials"]["accessKeyId"]
        assert client("AcknowledgeJob", {"jobId": job["id"], "nonce": job["nonce"]}) == {
            "status": "JOB_STATUS_IN_PROGRESS"
        }

    details = client("GetJobDetails", {"jobId": built})["jobDetails"]
    assert details["id"] == built and details["accountId"] == "123456789012"
    assert details["data"]["actionTypeId"] == DEMO_ACTION_TYPE
    assert details["data"]["actionConfiguration"]["configuration"] == {
        "ProjectName": "conformance",
        "Outcome": "succeed",
    }

    success = {
        "jobId": built,
        "executionDetails": {"summary": "built conformance", "externalExecutionId": "run-1", "percentComplete": 100},
        "currentRevision": {"revision": "abc123", "changeIdentifier": "change-1", "created": "2026-01-02T03:04:05Z"},
        "outputVariables": {"IMAGE_TAG": "v1"},
    }
    assert client("PutJobSuccessResult", success) == {}
    failed = {
        "jobId": broken,
        "failureDetails": {
            "type": "FAILURE_TYPE_JOB_FAILED",
            "message": "tests failed",
            "externalExecutionId": "run-2",
        },
    }
    assert client("PutJobFailureResult", failed) == {}

    done = emulator.job(built)
    assert done.status == pb.jobworker.JOB_STATUS_SUCCEEDED
    assert (done.acknowledge_count, done.result_count) == (1, 1)
    assert done.execution_details.summary == "built conformance"
    assert done.execution_details.percent_complete == 100
    assert done.current_revision.revision == "abc123"
    assert done.current_revision.created.ToJsonString() == "2026-01-02T03:04:05Z"
    assert dict(done.output_variables) == {"IMAGE_TAG": "v1"}
    failed_job = emulator.job(broken)
    assert failed_job.status == pb.jobworker.JOB_STATUS_FAILED
    assert failed_job.failure_details.type == pb.jobworker.FAILURE_TYPE_JOB_FAILED
    assert failed_job.failure_details.message == "tests failed"
    assert failed_job.failure_details.external_execution_id == "run-2"


def test_errors_carry_their_google_rpc_details(client, emulator):
    # Bad input caught at the edge: INVALID_ARGUMENT, a BadRequest violation per field.
    invalid = failure(client, "AcknowledgeJob", {"jobId": "not-a-job", "nonce": ""})
    assert invalid.code == "INVALID_ARGUMENT"
    violations = invalid.details["google.rpc.BadRequest"]["fieldViolations"]
    assert {violation["field"] for violation in violations} == {"job_id", "nonce"}
    assert all(violation["description"] for violation in violations)

    # An unknown job: NOT_FOUND, ErrorInfo with the AWS error code, ResourceInfo naming the job.
    unknown = str(uuid.uuid4())
    missing = failure(client, "GetJobDetails", {"jobId": unknown})
    assert missing.code == "NOT_FOUND"
    assert missing.details["google.rpc.ErrorInfo"]["reason"] == "JobNotFoundException"
    assert missing.details["google.rpc.ErrorInfo"]["domain"] == "codepipeline.amazonaws.com"
    assert missing.details["google.rpc.ErrorInfo"]["metadata"]["operation"] == "GetJobDetails"
    assert missing.details["google.rpc.ResourceInfo"]["resourceName"] == unknown

    # Another worker's nonce: ABORTED with InvalidNonceException.
    job_id = emulator.create_job()
    [job] = client("PollForJobs", {"actionTypeId": DEMO_ACTION_TYPE, "maxBatchSize": 1})["jobs"]
    assert job["id"] == job_id
    aborted = failure(client, "AcknowledgeJob", {"jobId": job_id, "nonce": job["nonce"] + "0"})
    assert aborted.code == "ABORTED"
    assert aborted.details["google.rpc.ErrorInfo"]["reason"] == "InvalidNonceException"

    # A result for a job that is not in progress: FAILED_PRECONDITION with InvalidJobStateException.
    early = failure(client, "PutJobSuccessResult", {"jobId": job_id, "executionDetails": {"summary": "too early"}})
    assert early.code == "FAILED_PRECONDITION"
    assert early.details["google.rpc.ErrorInfo"]["reason"] == "InvalidJobStateException"
    no_failure_yet = failure(
        client, "PutJobFailureResult",
        {"jobId": job_id, "failureDetails": {"type": "FAILURE_TYPE_JOB_FAILED", "message": "too early"}},
    )  # fmt: skip
    assert no_failure_yet.code == "FAILED_PRECONDITION"


@pytest.mark.parametrize("client_name", CLIENTS)
def test_upstream_throttling_is_unavailable_with_retry_info(client_name, pb, start_gateway):
    gateway = start_gateway("--faults", "PollForJobs:throttling=1")
    call = CLIENT_TYPES[client_name](gateway.address, pb)
    throttled = failure(call, "PollForJobs", {"actionTypeId": DEMO_ACTION_TYPE, "maxBatchSize": 1})
    assert throttled.code == "UNAVAILABLE"
    assert throttled.details["google.rpc.RetryInfo"]["retryDelay"].endswith("s")
    assert float(throttled.details["google.rpc.RetryInfo"]["retryDelay"][:-1]) > 0
    assert throttled.details["google.rpc.ErrorInfo"]["reason"] == "ThrottlingException"


def test_grpcio_decodes_retry_info_and_quota_failure_when_over_the_rate_limit(pb, start_gateway):
    gateway = start_gateway("--rate-limit-per-second", "1", "--rate-limit-burst", "1")
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb.jobworker_grpc.JobWorkerServiceStub(channel)
        request = pb.jobworker.GetJobDetailsRequest(job_id=str(uuid.uuid4()))
        codes = []
        for _ in range(5):
            try:
                stub.GetJobDetails(request, timeout=5)
            except grpc.RpcError as err:
                codes.append(err.code())
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    limited = err
                    break
        else:
            pytest.fail(f"5 calls at once never went over 1 call/s: {codes}")

        details = status_details(limited)
        delay = details["RetryInfo"].retry_delay.ToTimedelta().total_seconds()
        assert 0 < delay <= 1.0, delay
        [violation] = details["QuotaFailure"].violations
        assert violation.subject.startswith("client:") and violation.description

        # Waiting as long as RetryInfo says is enough to be let through again.
        time.sleep(delay + 0.05)
        with pytest.raises(grpc.RpcError) as after_waiting:
            stub.GetJobDetails(request, timeout=5)
        assert after_waiting.value.code() == grpc.StatusCode.NOT_FOUND
