"""boto3's S3 client against the emulator's artifact store, with the artifact credentials a job's
GetJobDetails hands out: the demo input zip downloads, an output uploads, and credentials stop
working once the job has its result."""

from __future__ import annotations

import io
import re
import zipfile

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import DEMO_ACTION_TYPE, EMULATOR_READY, EMULATOR_REGION, codepipeline_client

from conftest import EMULATOR_ARGS

S3_READY = re.compile(r"s3 store listening on (http://\S+)")


def s3_client(endpoint: str, credentials: dict) -> object:
    """An S3 client as a worker makes one from a job's credentials: path-style, whole bodies."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=EMULATOR_REGION,
        aws_access_key_id=credentials["accessKeyId"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=credentials["sessionToken"],
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            retries={"max_attempts": 1},
        ),
    )


@pytest.fixture
def emulator_and_store(launch):
    """The emulator (front and artifact store); the store's URL is read from its stdout."""
    emulator = launch(*EMULATOR_ARGS, ready=EMULATOR_READY)
    [store] = [m.group(1) for line in emulator._stdout_seen if (m := S3_READY.search(line))]
    return emulator, store


def in_progress_job(codepipeline) -> tuple[str, dict]:
    [job] = codepipeline.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)["jobs"]
    codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    details = codepipeline.get_job_details(jobId=job["id"])["jobDetails"]
    return job["id"], details["data"]


def test_a_worker_downloads_its_input_and_uploads_its_output_with_the_jobs_credentials(emulator_and_store):
    emulator, store = emulator_and_store
    codepipeline = codepipeline_client(emulator.address, protocol="json")
    job_id, data = in_progress_job(codepipeline)
    s3 = s3_client(store, data["artifactCredentials"])

    source = data["inputArtifacts"][0]["location"]["s3Location"]
    body = s3.get_object(Bucket=source["bucketName"], Key=source["objectKey"])["Body"].read()
    assert "README.md" in zipfile.ZipFile(io.BytesIO(body)).namelist()
    first = s3.get_object(Bucket=source["bucketName"], Key=source["objectKey"], Range="bytes=0-3")
    assert first["ContentRange"] == f"bytes 0-3/{len(body)}"
    assert first["Body"].read() == b"PK\x03\x04"

    output = data["outputArtifacts"][0]["location"]["s3Location"]
    put = s3.put_object(
        Bucket=output["bucketName"],
        Key=output["objectKey"],
        Body=b"built",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId="alias/demo",
    )
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == "alias/demo"

    # Outputs are not readable with the job's credentials; other keys neither.
    with pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=output["bucketName"], Key=output["objectKey"])
    assert denied.value.response["Error"]["Code"] == "AccessDenied"

    codepipeline.put_job_success_result(jobId=job_id)
    with pytest.raises(ClientError) as finished:
        s3.get_object(Bucket=source["bucketName"], Key=source["objectKey"])
    assert finished.value.response["Error"]["Code"] == "AccessDenied"
    assert finished.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(finished.value.response["ResponseMetadata"]["RequestId"]) == 16


def test_an_unknown_key_is_invalid_access_key_id(emulator_and_store):
    emulator, store = emulator_and_store
    stranger = s3_client(
        store,
        {"accessKeyId": "ASIANEVERISSUED00000", "secretAccessKey": "x", "sessionToken": "y"},
    )
    with pytest.raises(ClientError) as unknown:
        stranger.get_object(Bucket="codepipeline-us-east-1-demo-artifacts", Key="any.zip")
    assert unknown.value.response["Error"]["Code"] == "InvalidAccessKeyId"
