"""Missing, malformed and wrong credentials, and a client calling an RPC it is not allowed: each
refused with the code docs/authentication.md gives and ErrorInfo reason, before anything reaches the emulator, and
before the request is validated or even read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
import pytest

from corpus_protos import emulator
from corpus_protos import jobworker as pb
from corpus_protos import rpc
from corpus_wire import EMULATOR_ADMIN, JOB_WORKER, MAX_MESSAGE_SIZE

JOB_ID = "f4f4ff82-2d11-4a2b-9c3d-0123456789ab"

# One request per RPC that would pass the edge: a refusal here is about who calls, not what.
VALID_REQUESTS = {
    "PollForJobs": pb.PollForJobsRequest(
        action_type_id=pb.ActionTypeId(category=pb.ACTION_CATEGORY_BUILD, owner=pb.ACTION_OWNER_CUSTOM,
                                       provider="DemoBuilder", version="1"),
        max_batch_size=1),
    "AcknowledgeJob": pb.AcknowledgeJobRequest(job_id=JOB_ID, nonce="1"),
    "GetJobDetails": pb.GetJobDetailsRequest(job_id=JOB_ID),
    "PutJobSuccessResult": pb.PutJobSuccessResultRequest(job_id=JOB_ID),
    "PutJobFailureResult": pb.PutJobFailureResultRequest(
        job_id=JOB_ID, failure_details=pb.FailureDetails(type=pb.FAILURE_TYPE_JOB_FAILED, message="failed")),
}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class AuthCase:
    what: str
    path: str
    request: bytes
    authorization: str | None  # the header's value; None sends no header; "{worker}" is replaced
    code: grpc.StatusCode
    reason: str

    def __str__(self) -> str:
        return f"{self.what} is {self.code.name} {self.reason}"


def job_worker_call(rpc: str) -> tuple[str, bytes]:
    return JOB_WORKER + rpc, VALID_REQUESTS[rpc].SerializeToString()


ACK_PATH, ACK_REQUEST = job_worker_call("AcknowledgeJob")

CASES = [
    *(
        AuthCase(f"{rpc} without any credentials", *job_worker_call(rpc), None, UNAUTHENTICATED,
                 "MISSING_CREDENTIALS")
        for rpc in VALID_REQUESTS
    ),
    AuthCase("the emulator's GetCallCounts without any credentials", EMULATOR_ADMIN + "GetCallCounts",
             emulator.GetCallCountsRequest().SerializeToString(), None, UNAUTHENTICATED, "MISSING_CREDENTIALS"),
    AuthCase("AcknowledgeJob with `authorization: Basic xyz`", ACK_PATH, ACK_REQUEST, "Basic xyz",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with `authorization: Bearer` and no token", ACK_PATH, ACK_REQUEST, "Bearer",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with `authorization: Bearer ` and an empty token", ACK_PATH, ACK_REQUEST, "Bearer ",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with an empty authorization header", ACK_PATH, ACK_REQUEST, "",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with a valid token but no `Bearer` scheme", ACK_PATH, ACK_REQUEST, "{worker}",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with a valid token under the `Token` scheme", ACK_PATH, ACK_REQUEST, "Token {worker}",
             UNAUTHENTICATED, "MALFORMED_AUTHORIZATION"),
    AuthCase("AcknowledgeJob with an unknown bearer token", ACK_PATH, ACK_REQUEST, "Bearer not-a-token",
             UNAUTHENTICATED, "UNKNOWN_TOKEN"),
    AuthCase("AcknowledgeJob with a valid token missing its last character", ACK_PATH, ACK_REQUEST,
             "Bearer {worker_short}", UNAUTHENTICATED, "UNKNOWN_TOKEN"),
    AuthCase("AcknowledgeJob with a valid token in uppercase", ACK_PATH, ACK_REQUEST, "Bearer {worker_upper}",
             UNAUTHENTICATED, "UNKNOWN_TOKEN"),
    AuthCase("AcknowledgeJob presenting the SHA-256 digest from the token file as the token", ACK_PATH,
             ACK_REQUEST, "Bearer {worker_digest}", UNAUTHENTICATED, "UNKNOWN_TOKEN"),
    AuthCase("an invalid AcknowledgeJob request without credentials (auth comes before validation)", ACK_PATH,
             pb.AcknowledgeJobRequest(job_id="x").SerializeToString(), None, UNAUTHENTICATED,
             "MISSING_CREDENTIALS"),
    AuthCase("a message over the size limit with an unknown token (auth comes before reading the body)",
             JOB_WORKER + "PutJobFailureResult",
             pb.PutJobFailureResultRequest(job_id=JOB_ID, failure_details=pb.FailureDetails(
                 type=pb.FAILURE_TYPE_JOB_FAILED, message="m" * (MAX_MESSAGE_SIZE + 1))).SerializeToString(),
             "Bearer not-a-token", UNAUTHENTICATED, "UNKNOWN_TOKEN"),
    AuthCase("an unknown method without credentials (auth comes before routing)", JOB_WORKER + "DeleteJob",
             b"", None, UNAUTHENTICATED, "MISSING_CREDENTIALS"),
]


def authorization_value(template: str, gateway) -> str:
    worker = gateway.tokens["worker"]
    return template.format(
        worker=worker,
        worker_short=worker[:-1],
        worker_upper=worker.upper(),
        worker_digest=hashlib.sha256(worker.encode()).hexdigest(),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_call_without_valid_credentials_is_refused(gateway, case: AuthCase):
    metadata = ()
    if case.authorization is not None:
        metadata = (("authorization", authorization_value(case.authorization, gateway)),)
    before = gateway.call_counts()

    answer = gateway.call(case.path, case.request, metadata=metadata)

    assert (answer.code, answer.reason) == (case.code, case.reason), str(answer)
    assert not answer.violated_fields, f"a refused caller learnt about the request's fields: {answer}"
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


FORBIDDEN = [
    *(
        pytest.param(JOB_WORKER + rpc, VALID_REQUESTS[rpc].SerializeToString(),
                     id=f"a client allowed only AcknowledgeJob calling {rpc} is PERMISSION_DENIED METHOD_NOT_ALLOWED")
        for rpc in VALID_REQUESTS if rpc != "AcknowledgeJob"
    ),
    pytest.param(EMULATOR_ADMIN + "GetCallCounts", emulator.GetCallCountsRequest().SerializeToString(),
                 id="a client allowed only AcknowledgeJob calling the emulator's GetCallCounts is PERMISSION_DENIED "
                 "METHOD_NOT_ALLOWED"),
]


@pytest.mark.parametrize(("path", "request_bytes"), FORBIDDEN)
def test_a_client_calling_an_rpc_it_is_not_allowed_is_refused(gateway, path: str, request_bytes: bytes):
    before = gateway.call_counts()

    answer = gateway.call(path, request_bytes, client="ack_only")

    assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"), str(answer)
    info = answer.detail(rpc.ErrorInfo)
    assert dict(info.metadata) == {"client_id": "ack_only", "method": path.lstrip("/")}, str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_the_same_client_may_call_acknowledgejob_and_is_then_validated(gateway):
    """The control of the cases above: the restricted client passes auth for the one RPC it is
    allowed, and its bad request is then judged on its fields."""
    before = gateway.call_counts()

    answer = gateway.call(ACK_PATH, pb.AcknowledgeJobRequest(job_id=JOB_ID).SerializeToString(), client="ack_only")

    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, str(answer)
    assert answer.violated_fields == ["nonce"], str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_the_bearer_scheme_is_case_insensitive(gateway):
    """Pinned as observed, and as RFC 9110 §11.1 wants: `bearer <token>` is a valid credential
    (then the request's own fault is reported)."""
    before = gateway.call_counts()

    answer = gateway.call(ACK_PATH, pb.AcknowledgeJobRequest(job_id=JOB_ID).SerializeToString(),
                          metadata=(("authorization", f"bearer {gateway.tokens['worker']}"),))

    assert (answer.code, answer.violated_fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["nonce"]), str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()
