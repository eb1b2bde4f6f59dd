"""boto3 against the emulator's AWS front: it must answer as CodePipeline does.

botocore signs (SigV4), serialises (awsJson1_1) and parses the answers exactly as it does for
AWS, so every job-worker operation, modelled error and authentication failure is checked here
through the very client library a Python job worker uses.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from support import DEMO_ACTION_TYPE, EMULATOR_ACCOUNT_ID, codepipeline_client

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNKNOWN_ACTION_TYPE = DEMO_ACTION_TYPE | {"provider": "NoSuchProvider"}
OUTPUT_VARIABLES_LIMIT = 122_880
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
def test_a_job_id_that_is_not_a_uuid_is_a_validation_error(codepipeline, operation):
    # botocore checks lengths but not patterns client-side: this reaches the emulator.
    with raises_aws_error("ValidationException"):
        operation(codepipeline, "not-a-uuid")


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


def test_a_request_signed_with_the_wrong_secret_is_invalid_signature(emulator):
    client = codepipeline_client(emulator.address, secret_access_key="not-the-emulator-secret")
    with raises_aws_error("InvalidSignatureException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_an_unknown_access_key_is_unrecognized_client(emulator):
    client = codepipeline_client(emulator.address, access_key_id="AKIDUNKNOWN000000000")
    with raises_aws_error("UnrecognizedClientException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_an_unsigned_request_is_missing_authentication_token(emulator):
    client = codepipeline_client(emulator.address, signature_version=UNSIGNED)
    with raises_aws_error("MissingAuthenticationTokenException", status=None):
        client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)


def test_refused_requests_change_nothing(emulator, codepipeline):
    intruder = codepipeline_client(emulator.address, secret_access_key="not-the-emulator-secret")
    with raises_aws_error("InvalidSignatureException", status=None):
        intruder.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=3)
    assert len(codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=3)["jobs"]) == 3


def test_the_emulator_exits_cleanly_on_sigterm(emulator):
    assert emulator.stop() == 0
