"""boto3 against the emulator's AWS front: it must answer as CodePipeline does.

botocore signs (SigV4), serialises and parses the answers exactly as it does for AWS, so every
job-worker operation, modelled error and authentication failure is checked here through the very
client library a Python job worker uses, once in each of CodePipeline's wire protocols
(awsJson1_1 and Smithy RPC v2 CBOR: the `protocol` fixture).
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from conftest import emulator_args
from support import (
    CBOR,
    CBOR_PATH_PREFIX,
    DEMO_ACTION_TYPE,
    EMULATOR_ACCOUNT_ID,
    EMULATOR_READY,
    JSON,
    codepipeline_client,
)

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNKNOWN_ACTION_TYPE = DEMO_ACTION_TYPE | {"provider": "NoSuchProvider"}
OUTPUT_VARIABLES_LIMIT = 122_880
# The session token an emulator started with `--session-token` requires, as temporary
# credentials carry one.
SESSION_TOKEN = "emulator-session-token-7f3a2c"
EXECUTION_DETAILS = {"summary": "built it", "externalExecutionId": "build-42", "percentComplete": 100}
FAILURE_DETAILS = {"type": "JobFailed", "message": "the build broke", "externalExecutionId": "build-43"}


def without_metadata(response: dict) -> dict:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def poll_one(codepipeline) -> dict:
    """Polls the demo action type for a single job, which is then Dispatched."""
    jobs = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)["jobs"]
    assert len(jobs) == 1, f"expected one demo job, got {jobs}"
    return jobs[0]


def in_progress_job(codepipeline) -> dict:
    """Polls and acknowledges a demo job, which is then InProgress."""
    job = poll_one(codepipeline)
    codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    return job


def poll_until(codepipeline, wanted, timeout: float = 10.0) -> dict:
    """Polls the demo action type until it hands out a job for which `wanted(job)` is true."""
    deadline = time.monotonic() + timeout
    handed_out = []
    while time.monotonic() < deadline:
        jobs = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=10)["jobs"]
        if found := next((job for job in jobs if wanted(job)), None):
            return found
        handed_out += jobs
        time.sleep(0.1)
    pytest.fail(f"no wanted job within {timeout} s; polls handed out {handed_out}")


def sent_requests(client) -> list:
    """The requests `client` sends from now on, as botocore hands them to the HTTP layer."""
    sent = []
    client.meta.events.register("before-send.codepipeline", lambda request, **_: sent.append(request))
    return sent


def header(request, name: str) -> str | None:
    """A header of a sent request, as text (botocore holds some as bytes)."""
    value = request.headers.get(name)
    return value.decode() if isinstance(value, bytes) else value


def report_success(codepipeline, job_id: str) -> dict:
    return codepipeline.put_job_success_result(jobId=job_id, executionDetails=EXECUTION_DETAILS)


def report_failure(codepipeline, job_id: str) -> dict:
    return codepipeline.put_job_failure_result(jobId=job_id, failureDetails=FAILURE_DETAILS)


# Every job-worker operation that names a job, called with nothing but a job id varying.
OPERATIONS_ON_A_JOB = {
    "AcknowledgeJob": lambda codepipeline, job_id: codepipeline.acknowledge_job(jobId=job_id, nonce="1"),
    "GetJobDetails": lambda codepipeline, job_id: codepipeline.get_job_details(jobId=job_id),
    "PutJobSuccessResult": report_success,
    "PutJobFailureResult": report_failure,
}


@contextmanager
def raises_aws_error(code: str, status: int | None = 400) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expects the block to fail with the AWS error `code`, the HTTP status (any 4xx when None)
    and a request id, as AWS sends in `x-amzn-RequestId`."""
    with pytest.raises(ClientError) as caught:
        yield caught
    response = caught.value.response
    assert response["Error"]["Code"] == code, response
    http_status = response["ResponseMetadata"]["HTTPStatusCode"]
    if status is None:
        assert 400 <= http_status < 500, response
    else:
        assert http_status == status, response
    assert response["ResponseMetadata"].get("RequestId"), response


def test_a_job_goes_from_poll_through_acknowledge_and_details_to_success(codepipeline):
    job = poll_one(codepipeline)
    assert JOB_ID.fullmatch(job["id"])
    assert job["nonce"]
    assert job["accountId"] == EMULATOR_ACCOUNT_ID
    assert job["data"]["actionTypeId"] == DEMO_ACTION_TYPE
    credentials = job["data"]["artifactCredentials"]
    assert credentials["accessKeyId"] and credentials["secretAccessKey"] and credentials["sessionToken"]

    acknowledged = codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    assert acknowledged["status"] == "InProgress"

    details = codepipeline.get_job_details(jobId=job["id"])["jobDetails"]
    assert details["id"] == job["id"]
    assert details["accountId"] == EMULATOR_ACCOUNT_ID
    assert details["data"]["actionTypeId"] == DEMO_ACTION_TYPE

    assert without_metadata(report_success(codepipeline, job["id"])) == {}


def test_acknowledging_again_with_the_same_nonce_still_reports_in_progress(codepipeline):
    job = poll_one(codepipeline)
    first = codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    second = codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    assert first["status"] == second["status"] == "InProgress"


def test_each_polled_job_has_its_own_id_and_nonce(codepipeline):
    jobs = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=3)["jobs"]
    assert len(jobs) == 3
    assert len({job["id"] for job in jobs}) == 3
    assert len({job["nonce"] for job in jobs}) == 3


def test_success_with_a_continuation_token_queues_a_follow_up_job_carrying_it(codepipeline):
    job = in_progress_job(codepipeline)
    response = codepipeline.put_job_success_result(
        jobId=job["id"], continuationToken="step-2", executionDetails=EXECUTION_DETAILS
    )
    assert without_metadata(response) == {}

    follow_up = poll_until(codepipeline, lambda polled: polled["data"].get("continuationToken") == "step-2")
    assert follow_up["id"] != job["id"]
    assert follow_up["nonce"]
    assert follow_up["data"]["actionTypeId"] == DEMO_ACTION_TYPE
    assert codepipeline.acknowledge_job(jobId=follow_up["id"], nonce=follow_up["nonce"])["status"] == "InProgress"


def test_a_failure_result_completes_an_in_progress_job(codepipeline):
    job = in_progress_job(codepipeline)
    assert without_metadata(report_failure(codepipeline, job["id"])) == {}
    with raises_aws_error("InvalidJobStateException"):
        report_failure(codepipeline, job["id"])


def test_every_response_carries_a_request_id(codepipeline):
    response = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)
    assert response["ResponseMetadata"]["RequestId"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == response["ResponseMetadata"]["RequestId"]


def test_acknowledging_with_a_wrong_nonce_is_invalid_nonce(codepipeline):
    job = poll_one(codepipeline)
    with raises_aws_error("InvalidNonceException"):
        codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"] + "-not-mine")


@pytest.mark.parametrize("operation", OPERATIONS_ON_A_JOB.values(), ids=OPERATIONS_ON_A_JOB.keys())
def test_an_unknown_job_id_is_job_not_found(codepipeline, operation):
    with raises_aws_error("JobNotFoundException"):
        operation(codepipeline, str(uuid.uuid4()))


@pytest.mark.parametrize("operation", OPERATIONS_ON_A_JOB.values(), ids=OPERATIONS_ON_A_JOB.keys())
def test_a_job_id_that_is_not_a_uuid_is_a_validation_error_worded_as_aws_words_it(codepipeline, operation):
    # botocore checks lengths but not patterns client-side: this reaches the emulator.
    with raises_aws_error("ValidationException") as caught:
        operation(codepipeline, "not-a-uuid")
    # The pattern is the one in botocore's own model of the JobId shape.
    pattern = codepipeline.meta.service_model.shape_for("JobId").metadata["pattern"]
    assert caught.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'not-a-uuid' at 'jobId' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}"
    )


@pytest.mark.parametrize("report", [report_success, report_failure])
def test_reporting_a_result_for_a_job_that_is_only_dispatched_is_invalid_job_state(codepipeline, report):
    job = poll_one(codepipeline)
    with raises_aws_error("InvalidJobStateException"):
        report(codepipeline, job["id"])


def test_reporting_success_for_a_job_that_already_succeeded_is_invalid_job_state(codepipeline):
    job = in_progress_job(codepipeline)
    report_success(codepipeline, job["id"])
    with raises_aws_error("InvalidJobStateException"):
        report_success(codepipeline, job["id"])


def test_polling_an_unknown_action_type_is_action_type_not_found(codepipeline):
    with raises_aws_error("ActionTypeNotFoundException"):
        codepipeline.poll_for_jobs(actionTypeId=UNKNOWN_ACTION_TYPE, maxBatchSize=1)


def test_output_variables_over_the_size_limit_are_refused_and_leave_the_job_in_progress(codepipeline):
    job = in_progress_job(codepipeline)
    too_large = {f"var{index}": "x" * 20_000 for index in range(7)}
    assert sum(len(key) + len(value) for key, value in too_large.items()) > OUTPUT_VARIABLES_LIMIT
    with raises_aws_error("OutputVariablesSizeExceededException"):
        codepipeline.put_job_success_result(jobId=job["id"], outputVariables=too_large)

    accepted = codepipeline.put_job_success_result(jobId=job["id"], outputVariables={"commit": "abc123"})
    assert without_metadata(accepted) == {}


def test_a_request_signed_with_the_wrong_secret_is_invalid_signature(emulator, protocol):
    client = codepipeline_client(emulator.address, protocol=protocol, secret_access_key="not-the-emulator-secret")
    with raises_aws_error("InvalidSignatureException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_an_unknown_access_key_is_unrecognized_client(emulator, protocol):
    client = codepipeline_client(emulator.address, protocol=protocol, access_key_id="AKIDUNKNOWN000000000")
    with raises_aws_error("UnrecognizedClientException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_an_unsigned_request_is_missing_authentication_token(emulator, protocol):
    client = codepipeline_client(emulator.address, protocol=protocol, signature_version=UNSIGNED)
    with raises_aws_error("MissingAuthenticationTokenException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


@pytest.fixture
def emulator_requiring_a_session_token(launch):
    """An emulator whose front takes only requests carrying SESSION_TOKEN."""
    return launch(*emulator_args(), "--session-token", SESSION_TOKEN, ready=EMULATOR_READY)


def test_the_session_token_the_front_requires_is_accepted(emulator_requiring_a_session_token, protocol):
    address = emulator_requiring_a_session_token.address
    client = codepipeline_client(address, protocol=protocol, session_token=SESSION_TOKEN)
    sent = sent_requests(client)
    assert len(client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)["jobs"]) == 1
    assert header(sent[0], "X-Amz-Security-Token") == SESSION_TOKEN


@pytest.mark.parametrize("token", ["another-session-token", None], ids=["another token", "no token"])
def test_a_front_requiring_a_session_token_refuses_any_other_as_unrecognized_client(
    emulator_requiring_a_session_token, protocol, token
):
    client = codepipeline_client(emulator_requiring_a_session_token.address, protocol=protocol, session_token=token)
    with raises_aws_error("UnrecognizedClientException") as caught:
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)
    assert caught.value.response["Error"]["Message"] == "The security token included in the request is invalid."


def test_a_front_requiring_no_session_token_refuses_one_as_unrecognized_client(emulator, protocol):
    client = codepipeline_client(emulator.address, protocol=protocol, session_token="a-token-it-never-issued")
    with raises_aws_error("UnrecognizedClientException"):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_refused_requests_change_nothing(emulator, protocol, codepipeline):
    intruder = codepipeline_client(emulator.address, protocol=protocol, secret_access_key="not-the-emulator-secret")
    with raises_aws_error("InvalidSignatureException", status=None):
        intruder.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=3)
    assert len(codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=3)["jobs"]) == 3


def test_each_client_calls_the_front_in_its_own_protocol_and_reads_answers_in_it(codepipeline, protocol):
    sent = sent_requests(codepipeline)
    response = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)
    assert len(response["jobs"]) == 1

    (request,) = sent
    path = urllib.parse.urlsplit(request.url).path
    answered = response["ResponseMetadata"]["HTTPHeaders"]
    assert header(request, "Authorization").startswith("AWS4-HMAC-SHA256 Credential=")
    if protocol == CBOR:
        assert path == CBOR_PATH_PREFIX + "PollForJobs"
        assert header(request, "smithy-protocol") == "rpc-v2-cbor"
        assert header(request, "Content-Type") == "application/cbor"
        assert header(request, "X-Amz-Target") is None
        assert answered["content-type"] == "application/cbor"
        assert answered["smithy-protocol"] == "rpc-v2-cbor"
    else:
        assert protocol == JSON
        assert path == "/"
        assert header(request, "X-Amz-Target") == "CodePipeline_20150709.PollForJobs"
        assert header(request, "Content-Type") == "application/x-amz-json-1.1"
        assert answered["content-type"] == "application/x-amz-json-1.1"


def test_a_result_without_output_is_answered_without_a_body_in_cbor(codepipeline, protocol):
    job = in_progress_job(codepipeline)
    answered = report_success(codepipeline, job["id"])["ResponseMetadata"]["HTTPHeaders"]
    if protocol == CBOR:
        assert answered["content-length"] == "0"
        assert "content-type" not in answered
    else:
        assert answered["content-type"] == "application/x-amz-json-1.1"


def test_the_emulator_exits_cleanly_on_sigterm(emulator):
    assert emulator.stop() == 0
