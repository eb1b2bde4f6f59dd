"""boto3 against the emulator's AWS front for the third-party half of the job API: the five
operations, their shapes and every modelled error, through the client a Python partner worker
uses, in both wire protocols (the `protocol` fixture). The emulator starts with three demo
third-party jobs for the demo client."""

from __future__ import annotations

import datetime
import uuid

import pytest

from support import DEMO_ACTION_TYPE, DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN, DEMO_THIRD_PARTY_ACTION_TYPE
from test_emulator_boto3 import FAILURE_DETAILS, EXECUTION_DETAILS, JOB_ID, raises_aws_error, without_metadata

# `created` is a timestamp: epoch seconds in JSON, a tag-1 CBOR item in rpcv2Cbor.
REVISION = {
    "revision": "partner-rev-1",
    "changeIdentifier": "change-1",
    "created": datetime.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=datetime.timezone.utc),
    "revisionSummary": "built",
}


def poll_one(codepipeline) -> dict:
    jobs = codepipeline.poll_for_third_party_jobs(actionTypeId=DEMO_THIRD_PARTY_ACTION_TYPE, maxBatchSize=1)["jobs"]
    assert len(jobs) == 1, f"expected one demo third-party job, got {jobs}"
    return jobs[0]


def details(codepipeline, job_id: str, client_token: str = DEMO_CLIENT_TOKEN) -> dict:
    return codepipeline.get_third_party_job_details(jobId=job_id, clientToken=client_token)["jobDetails"]


def in_progress_job(codepipeline) -> dict:
    job = poll_one(codepipeline)
    nonce = details(codepipeline, job["jobId"])["nonce"]
    codepipeline.acknowledge_third_party_job(jobId=job["jobId"], nonce=nonce, clientToken=DEMO_CLIENT_TOKEN)
    return job


def report_success(codepipeline, job_id: str, client_token: str = DEMO_CLIENT_TOKEN, **members) -> dict:
    return codepipeline.put_third_party_job_success_result(jobId=job_id, clientToken=client_token, **members)


def report_failure(codepipeline, job_id: str, client_token: str = DEMO_CLIENT_TOKEN) -> dict:
    return codepipeline.put_third_party_job_failure_result(
        jobId=job_id, clientToken=client_token, failureDetails=FAILURE_DETAILS
    )


# Every third-party operation that names a job, with a job id and a client token varying.
OPERATIONS_ON_A_JOB = {
    "AcknowledgeThirdPartyJob": lambda cp, job_id, token: cp.acknowledge_third_party_job(
        jobId=job_id, nonce="1", clientToken=token
    ),
    "GetThirdPartyJobDetails": lambda cp, job_id, token: details(cp, job_id, token),
    "PutThirdPartyJobSuccessResult": report_success,
    "PutThirdPartyJobFailureResult": report_failure,
}


def test_a_poll_returns_only_the_client_and_the_job(codepipeline):
    job = poll_one(codepipeline)
    assert set(job) == {"clientId", "jobId"}
    assert job["clientId"] == DEMO_CLIENT_ID
    assert JOB_ID.fullmatch(job["jobId"])


def test_a_third_party_job_goes_from_poll_through_details_and_acknowledge_to_success(codepipeline):
    job = poll_one(codepipeline)
    found = details(codepipeline, job["jobId"])
    assert set(found) == {"id", "data", "nonce"}
    assert found["id"] == job["jobId"]
    data = found["data"]
    assert data["actionTypeId"] == DEMO_THIRD_PARTY_ACTION_TYPE
    assert data["actionConfiguration"]["configuration"]["ProjectName"] == "demo-app"
    assert data["pipelineContext"]["pipelineName"] == "demo-pipeline"
    assert data["inputArtifacts"][0]["location"]["s3Location"]["bucketName"]
    credentials = data["artifactCredentials"]
    assert credentials["accessKeyId"] and credentials["secretAccessKey"] and credentials["sessionToken"]

    acknowledged = codepipeline.acknowledge_third_party_job(
        jobId=job["jobId"], nonce=found["nonce"], clientToken=DEMO_CLIENT_TOKEN
    )
    assert acknowledged["status"] == "InProgress"
    response = report_success(codepipeline, job["jobId"], currentRevision=REVISION, executionDetails=EXECUTION_DETAILS)
    assert without_metadata(response) == {}


def test_a_continuation_token_queues_a_follow_up_third_party_job_carrying_it(codepipeline):
    job = in_progress_job(codepipeline)
    report_success(codepipeline, job["jobId"], continuationToken="step-2")
    polled = codepipeline.poll_for_third_party_jobs(actionTypeId=DEMO_THIRD_PARTY_ACTION_TYPE, maxBatchSize=10)["jobs"]
    carried = [
        p for p in polled if details(codepipeline, p["jobId"])["data"].get("continuationToken") == "step-2"
    ]
    assert len(carried) == 1, polled
    assert carried[0]["jobId"] != job["jobId"]


def test_a_failure_result_completes_an_in_progress_third_party_job(codepipeline):
    job = in_progress_job(codepipeline)
    assert without_metadata(report_failure(codepipeline, job["jobId"])) == {}
    with raises_aws_error("InvalidJobStateException"):
        report_failure(codepipeline, job["jobId"])


@pytest.mark.parametrize("operation", OPERATIONS_ON_A_JOB.values(), ids=OPERATIONS_ON_A_JOB.keys())
def test_another_clients_token_is_invalid_client_token_and_never_echoed(codepipeline, operation):
    job = poll_one(codepipeline)
    wrong = "a-token-of-another-client-3c9e"
    with raises_aws_error("InvalidClientTokenException") as caught:
        operation(codepipeline, job["jobId"], wrong)
    message = caught.value.response["Error"]["Message"]
    assert wrong not in message and DEMO_CLIENT_TOKEN not in message


@pytest.mark.parametrize("operation", OPERATIONS_ON_A_JOB.values(), ids=OPERATIONS_ON_A_JOB.keys())
def test_an_unknown_third_party_job_is_job_not_found(codepipeline, operation):
    with raises_aws_error("JobNotFoundException"):
        operation(codepipeline, f"partner-job-{uuid.uuid4()}", DEMO_CLIENT_TOKEN)


@pytest.mark.parametrize(
    "member", ["jobId", "clientToken"], ids=["513-character job id", "257-character client token"]
)
@pytest.mark.parametrize("operation", OPERATIONS_ON_A_JOB.values(), ids=OPERATIONS_ON_A_JOB.keys())
def test_members_over_their_length_are_validation_errors(codepipeline, operation, member):
    # botocore checks minimum lengths client-side, not maximums: these reach the emulator.
    job_id = "j" * 513 if member == "jobId" else "partner-job"
    token = "t" * 257 if member == "clientToken" else DEMO_CLIENT_TOKEN
    with raises_aws_error("ValidationException") as caught:
        operation(codepipeline, job_id, token)
    message = caught.value.response["Error"]["Message"]
    shape = codepipeline.meta.service_model.shape_for("ThirdPartyJobId" if member == "jobId" else "ClientToken")
    assert message.startswith("1 validation error detected: Value "), message
    assert (
        f" at '{member}' failed to satisfy constraint: "
        f"Member must have length less than or equal to {shape.metadata['max']}"
    ) in message
    assert "t" * 257 not in message, "the token is never quoted"


def test_the_details_of_a_custom_job_are_invalid_job(codepipeline):
    custom = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)["jobs"][0]
    with raises_aws_error("InvalidJobException"):
        details(codepipeline, custom["id"])


def test_a_stale_nonce_is_invalid_nonce(codepipeline):
    job = poll_one(codepipeline)
    with raises_aws_error("InvalidNonceException"):
        codepipeline.acknowledge_third_party_job(jobId=job["jobId"], nonce="12345", clientToken=DEMO_CLIENT_TOKEN)


@pytest.mark.parametrize("report", [report_success, report_failure])
def test_a_result_for_a_dispatched_third_party_job_is_invalid_job_state(codepipeline, report):
    job = poll_one(codepipeline)
    with raises_aws_error("InvalidJobStateException"):
        report(codepipeline, job["jobId"])


def test_polling_an_unknown_third_party_action_type_is_action_type_not_found(codepipeline):
    with raises_aws_error("ActionTypeNotFoundException"):
        codepipeline.poll_for_third_party_jobs(
            actionTypeId=DEMO_THIRD_PARTY_ACTION_TYPE | {"provider": "NoSuchPartner"}, maxBatchSize=1
        )


def test_polling_a_custom_action_type_for_third_party_jobs_is_a_validation_error(codepipeline):
    with raises_aws_error("ValidationException"):
        codepipeline.poll_for_third_party_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)
