"""The gateway's artifact path against an S3 nobody here wrote: moto's server.

A gateway on the in-process emulator (jobs, credentials) with `--s3-endpoint-url` pointing its
artifact client at moto, through a recorder that keeps what it sent (moto_support.py). boto3 sets
the bucket up and reads back what the gateway wrote; the jobs are made with the emulator's admin
service, polled and acknowledged through the gateway, and their artifacts go through its
ArtifactService. What moto does not check (the SHA-256 sent with each body), the test checks on
the recorded requests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace

import boto3
import grpc
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google.rpc import error_details_pb2, status_pb2

from grpc_stubs import load_python_stubs
from moto_support import MotoServer, WireRecorder, sha256_base64
from support import EMULATOR_REGION, GATEWAY_READY

PART_SIZE = 5 * 1024 * 1024  # --artifact-part-size 5MiB
CHUNK = 1024 * 1024  # the size of the chunks a test streams
CALL_TIMEOUT_SECONDS = 30
KMS_KEY_ID = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture(scope="module")
def pb(tmp_path_factory) -> SimpleNamespace:
    return load_python_stubs(tmp_path_factory.mktemp("python-stubs"))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(moto):
    """boto3's S3 client on moto, path-style, any credentials."""
    return boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name=EMULATOR_REGION,
        aws_access_key_id="moto-test-key",
        aws_secret_access_key="moto-test-secret",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def wire(moto) -> Iterator[WireRecorder]:
    recorder = WireRecorder(moto.url)
    yield recorder
    recorder.stop()


@pytest.fixture
def gateway(launch, wire):
    """The gateway on the emulator (no demo jobs), its artifact client on moto (through `wire`)."""
    return launch(
        "serve",
        "--listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--upstream", "emulator",
        "--demo-jobs", "0",
        "--s3-endpoint-url", wire.url,
        "--artifact-part-size", "5MiB",
        ready=GATEWAY_READY,
    )  # fmt: skip


@pytest.fixture
def channel(gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield channel


@pytest.fixture
def bucket(s3) -> str:
    """A new, empty bucket in moto."""
    name = f"codepipeline-us-east-1-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


class Pipeline:
    """Jobs whose artifacts are in a bucket, through the gateway: created with the emulator's
    admin service, polled and acknowledged, then their artifacts read and written."""

    def __init__(self, pb: SimpleNamespace, channel: grpc.Channel, bucket: str) -> None:
        self.pb = pb
        self.bucket = bucket
        self.admin = pb.admin_grpc.EmulatorAdminServiceStub(channel)
        self.job_worker = pb.jobworker_grpc.JobWorkerServiceStub(channel)
        self.artifacts = pb.jobworker_grpc.ArtifactServiceStub(channel)
        self.action_type = pb.jobworker.ActionTypeId(
            category=pb.jobworker.ACTION_CATEGORY_BUILD,
            owner=pb.jobworker.ACTION_OWNER_CUSTOM,
            provider="DemoBuilder",
            version="1",
        )

    def artifact(self, name: str, key: str, bucket: str | None = None):
        jw = self.pb.jobworker
        location = jw.S3ArtifactLocation(bucket_name=bucket or self.bucket, object_key=key)
        return jw.Artifact(
            name=name,
            revision=f"{name}-revision",
            location=jw.ArtifactLocation(type=jw.ARTIFACT_LOCATION_TYPE_S3, s3_location=location),
        )

    def in_progress_job(self, inputs=(), outputs=(), kms_key_id: str | None = None) -> str:
        """A job with these artifacts, polled and acknowledged through the gateway: InProgress."""
        jw = self.pb.jobworker
        key = jw.EncryptionKey(id=kms_key_id, type=jw.ENCRYPTION_KEY_TYPE_KMS) if kms_key_id else None
        request = self.pb.admin.CreateJobRequest(
            action_type_id=self.action_type,
            input_artifacts=inputs,
            output_artifacts=outputs,
            encryption_key=key,
        )
        job_id = self.admin.CreateJob(request, timeout=CALL_TIMEOUT_SECONDS).job_id
        polled = self.job_worker.PollForJobs(
            jw.PollForJobsRequest(action_type_id=self.action_type, max_batch_size=1), timeout=CALL_TIMEOUT_SECONDS
        )
        [job] = polled.jobs
        assert job.id == job_id
        acknowledged = self.job_worker.AcknowledgeJob(
            jw.AcknowledgeJobRequest(job_id=job.id, nonce=job.nonce), timeout=CALL_TIMEOUT_SECONDS
        )
        assert acknowledged.status == jw.JOB_STATUS_IN_PROGRESS
        return job_id

    def download(self, job_id: str, name: str) -> tuple[object, bytes]:
        """DownloadInputArtifact: (its metadata, its bytes)."""
        jw = self.pb.jobworker
        request = jw.DownloadInputArtifactRequest(job=jw.ArtifactJob(job_id=job_id), artifact_name=name)
        first, *rest = self.artifacts.DownloadInputArtifact(request, timeout=CALL_TIMEOUT_SECONDS)
        assert first.WhichOneof("response") == "metadata", first
        assert all(message.WhichOneof("response") == "chunk" for message in rest)
        return first.metadata, b"".join(message.chunk for message in rest)

    def header(self, job_id: str, name: str, content_type: str = ""):
        jw = self.pb.jobworker
        header = jw.UploadOutputArtifactHeader(
            job=jw.ArtifactJob(job_id=job_id), artifact_name=name, content_type=content_type
        )
        return jw.UploadOutputArtifactRequest(header=header)

    def upload(self, job_id: str, name: str, data: bytes, content_type: str = ""):
        """UploadOutputArtifact: the header, then `data` in chunks of CHUNK bytes."""
        chunk = self.pb.jobworker.UploadOutputArtifactRequest

        def requests():
            yield self.header(job_id, name, content_type)
            for start in range(0, len(data), CHUNK):
                yield chunk(chunk=data[start : start + CHUNK])
            yield chunk(end=self.pb.jobworker.UploadOutputArtifactEnd())

        return self.artifacts.UploadOutputArtifact(requests(), timeout=CALL_TIMEOUT_SECONDS)


@pytest.fixture
def pipeline(pb, channel, bucket) -> Pipeline:
    return Pipeline(pb, channel, bucket)


def small_zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.md", text)
    return buffer.getvalue()


def composite_sha256(data: bytes, part_size: int) -> str:
    """S3's checksum of a multipart object: the SHA-256 of its parts' SHA-256s, `-<parts>`."""
    parts = [data[start : start + part_size] for start in range(0, len(data), part_size)]
    digests = b"".join(hashlib.sha256(part).digest() for part in parts)
    return f"{base64.b64encode(hashlib.sha256(digests).digest()).decode()}-{len(parts)}"


def details_of(err: grpc.RpcError) -> dict[str, object]:
    """The google.rpc details of a failed call, by message name."""
    trailer = dict(err.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailer["grpc-status-details-bin"])
    decoded = {}
    for detail in status.details:
        name = detail.type_url.removeprefix("type.googleapis.com/google.rpc.")
        message = getattr(error_details_pb2, name)()
        assert detail.Unpack(message)
        decoded[name] = message
    return decoded


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


INPUTS = {
    "a small zip": small_zip("# moto-app\n\nThe source, as the previous action left it.\n"),
    "5 MiB + 1 (two ranged GETs)": bytes(range(256)) * (PART_SIZE // 256) + b"!",
}


@pytest.mark.parametrize("data", INPUTS.values(), ids=INPUTS.keys())
def test_an_input_put_into_moto_with_boto3_downloads_through_the_gateway_byte_for_byte(
    pipeline, s3, bucket, wire, data
):
    put = s3.put_object(
        Bucket=bucket, Key="in/source.zip", Body=data, ContentType="application/zip", ChecksumAlgorithm="SHA256"
    )
    assert put["ChecksumSHA256"] == sha256_base64(data)
    job_id = pipeline.in_progress_job(inputs=[pipeline.artifact("SourceOutput", "in/source.zip")])

    metadata, body = pipeline.download(job_id, "SourceOutput")

    assert body == data
    assert metadata.size_bytes == len(data)
    assert metadata.content_type == "application/zip"
    assert (metadata.location.bucket_name, metadata.location.object_key) == (bucket, "in/source.zip")
    assert metadata.revision == "SourceOutput-revision"
    # moto keeps the SHA-256 boto3 sent; the gateway passes it on, having checked the bytes.
    assert metadata.sha256 == sha256_base64(data)
    # One HEAD (with the checksum asked for), then ranged GETs of at most a part each.
    [head] = wire.of("HeadObject")
    assert head.headers["x-amz-checksum-mode"] == "ENABLED"
    ranges = [request.headers["range"] for request in wire.of("GetObject")]
    expected = [f"bytes={start}-{min(start + PART_SIZE, len(data)) - 1}" for start in range(0, len(data), PART_SIZE)]
    assert ranges == expected


SIZES = {"0 bytes": 0, "1 byte": 1, "5 MiB + 1 (two parts)": PART_SIZE + 1}
KEYS = {"the job's KMS key": KMS_KEY_ID, "no key (the AWS-managed one)": None}


@pytest.mark.parametrize("kms_key_id", KEYS.values(), ids=KEYS.keys())
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_an_output_uploaded_through_the_gateway_is_in_moto_as_sent(pipeline, s3, bucket, wire, size, kms_key_id):
    data = hashlib.sha256(b"seed").digest() * (size // 32) + b"x" * (size % 32)
    job_id = pipeline.in_progress_job(outputs=[pipeline.artifact("BuildOutput", "out/build.zip")], kms_key_id=kms_key_id)

    uploaded = pipeline.upload(job_id, "BuildOutput", data, content_type="application/x-test")

    # What the gateway answered...
    assert (uploaded.location.bucket_name, uploaded.location.object_key) == (bucket, "out/build.zip")
    assert uploaded.size_bytes == size
    assert uploaded.sha256 == sha256_base64(data)
    assert uploaded.kms_key_id == (kms_key_id or "")
    # ...is what moto holds.
    stored = s3.get_object(Bucket=bucket, Key="out/build.zip", ChecksumMode="ENABLED")
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "application/x-test"
    assert stored["ETag"] == uploaded.etag
    head = s3.head_object(Bucket=bucket, Key="out/build.zip", ChecksumMode="ENABLED")
    assert head["ContentLength"] == size
    assert head["ServerSideEncryption"] == "aws:kms"
    # moto names no key for the AWS-managed one (S3 would name aws/s3's ARN).
    assert head.get("SSEKMSKeyId") == kms_key_id

    multipart = size > PART_SIZE
    if multipart:
        # moto works the composite checksum out from the parts it got.
        assert stored["ChecksumSHA256"] == composite_sha256(data, PART_SIZE)
        assert stored["ChecksumType"] == "COMPOSITE"
        assert uploaded.etag.endswith('-2"')
    elif "ChecksumSHA256" in stored:  # (moto keeps a PutObject's only with x-amz-sdk-checksum-algorithm)
        assert stored["ChecksumSHA256"] == sha256_base64(data)

    # On the wire: every body with its own SHA-256; SSE-KMS with the job's key, or no key named.
    def encryption(request) -> tuple[str | None, str | None]:
        headers = request.headers
        return headers.get("x-amz-server-side-encryption"), headers.get("x-amz-server-side-encryption-aws-kms-key-id")

    written = wire.of("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
    assert all(request.status == 200 for request in written), [(r.operation, r.status) for r in written]
    if not multipart:
        [put] = written
        assert put.operation == "PutObject"
        assert put.body == data
        assert put.headers["x-amz-checksum-sha256"] == sha256_base64(data)
        assert put.headers["content-type"] == "application/x-test"
        assert encryption(put) == ("aws:kms", kms_key_id)
        return
    create, *parts, complete = written
    assert create.operation == "CreateMultipartUpload"
    assert create.headers["x-amz-checksum-algorithm"] == "SHA256"
    assert create.headers["content-type"] == "application/x-test"
    assert encryption(create) == ("aws:kms", kms_key_id)
    assert [part.operation for part in parts] == ["UploadPart", "UploadPart"]
    assert [len(part.body) for part in parts] == [PART_SIZE, 1]
    assert [part.query["partNumber"] for part in parts] == ["1", "2"]
    for part in parts:
        assert part.headers["x-amz-checksum-sha256"] == sha256_base64(part.body)
    assert b"".join(part.body for part in parts) == data
    assert complete.operation == "CompleteMultipartUpload"
    listed = ElementTree.fromstring(complete.body).findall(f"{S3_NAMESPACE}Part")
    assert [
        (part.findtext(f"{S3_NAMESPACE}PartNumber"), part.findtext(f"{S3_NAMESPACE}ChecksumSHA256")) for part in listed
    ] == [(part.query["partNumber"], part.headers["x-amz-checksum-sha256"]) for part in parts]


def test_an_output_written_in_parts_downloads_through_the_gateway(pipeline, s3, bucket):
    """moto's HeadObject gives a multipart object's composite SHA-256 without its "-<parts>"
    suffix (S3's has it): the gateway must still know it for a composite (the ETag says
    "-<parts>") and not compare it with the bytes' SHA-256."""
    data = b"p" * (PART_SIZE + 1)
    writer = pipeline.in_progress_job(outputs=[pipeline.artifact("BuildOutput", "out/parts.zip")])
    pipeline.upload(writer, "BuildOutput", data)
    head = s3.head_object(Bucket=bucket, Key="out/parts.zip", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-2"')
    reader = pipeline.in_progress_job(inputs=[pipeline.artifact("BuildOutput", "out/parts.zip")])

    assert head["ChecksumSHA256"] == composite_sha256(data, PART_SIZE)[:-2], "moto still drops the suffix"
    _, body = pipeline.download(reader, "BuildOutput")
    assert body == data


CUTS = {"before a part is full": 64 * 1024, "after a part went to moto": PART_SIZE + CHUNK}


@pytest.mark.parametrize("sent", CUTS.values(), ids=CUTS.keys())
def test_an_upload_cut_mid_stream_leaves_no_object_and_no_multipart_upload_in_moto(
    pb, pipeline, s3, bucket, wire, sent
):
    job_id = pipeline.in_progress_job(outputs=[pipeline.artifact("BuildOutput", "out/cut.zip")])
    hold = threading.Event()

    def requests():
        yield pipeline.header(job_id, "BuildOutput")
        for start in range(0, sent, CHUNK):
            yield pb.jobworker.UploadOutputArtifactRequest(chunk=b"c" * min(CHUNK, sent - start))
        hold.wait(CALL_TIMEOUT_SECONDS)  # the stream stays open, unfinished, until it is cut

    call = pipeline.artifacts.UploadOutputArtifact.future(requests(), timeout=CALL_TIMEOUT_SECONDS)
    try:
        if sent > PART_SIZE:
            # The first part is in moto before the stream is cut.
            [upload] = wait_until(lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), 10, "an upload")
            wait_until(
                lambda: s3.list_parts(Bucket=bucket, Key="out/cut.zip", UploadId=upload["UploadId"]).get("Parts"),
                10,
                "its first part",
            )
        else:
            time.sleep(0.3)  # the chunks reach the gateway, which holds them: less than a part
        call.cancel()
    finally:
        hold.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()

    # The gateway aborts the multipart upload it had started; nothing is stored.
    wait_until(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), 10, "no multipart upload left")
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="out/cut.zip")
    assert missing.value.response["Error"]["Code"] == "404"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not wire.of("PutObject", "CompleteMultipartUpload")
    if sent > PART_SIZE:
        [part] = wire.of("UploadPart")
        [abort] = wire.of("AbortMultipartUpload")
        assert (abort.query["uploadId"], abort.status) == (part.query["uploadId"], 204)
    else:
        assert not wire.of("CreateMultipartUpload", "UploadPart", "AbortMultipartUpload")


def test_an_upload_that_stops_without_its_end_completes_nothing_in_moto(pb, pipeline, s3, bucket, wire):
    """A cut stream can reach the gateway as a clean end: without the end message (or a declared
    size) the gateway cannot tell, so it aborts instead of completing, however the bytes came."""
    job_id = pipeline.in_progress_job(outputs=[pipeline.artifact("BuildOutput", "out/stopped.zip")])

    def requests():
        yield pipeline.header(job_id, "BuildOutput")
        for _ in range(0, PART_SIZE + CHUNK, CHUNK):
            yield pb.jobworker.UploadOutputArtifactRequest(chunk=b"s" * CHUNK)

    with pytest.raises(grpc.RpcError) as refused:
        pipeline.artifacts.UploadOutputArtifact(requests(), timeout=CALL_TIMEOUT_SECONDS)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "before its end message" in refused.value.details()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not wire.of("PutObject", "CompleteMultipartUpload")
    [part] = wire.of("UploadPart")
    [abort] = wire.of("AbortMultipartUpload")
    assert abort.query["uploadId"] == part.query["uploadId"]


def test_an_input_moto_does_not_have_is_not_found_through_the_gateway(pipeline, bucket):
    job_id = pipeline.in_progress_job(inputs=[pipeline.artifact("SourceOutput", "in/never-written.zip")])

    with pytest.raises(grpc.RpcError) as missing:
        pipeline.download(job_id, "SourceOutput")

    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert re.match(rf"artifact SourceOutput of job {job_id} is not in the artifact store", missing.value.details())
    details = details_of(missing.value)
    # A HEAD's 404 has no body: the code is the one the SDK gives it.
    assert details["ErrorInfo"].domain == "s3.amazonaws.com"
    assert details["ErrorInfo"].reason == "NotFound"
    assert details["ErrorInfo"].metadata["http_status"] == "404"
    assert (details["ResourceInfo"].resource_name, details["ResourceInfo"].owner) == ("SourceOutput", job_id)


def test_an_output_to_a_bucket_moto_does_not_have_is_not_found_and_creates_nothing(pipeline, s3):
    missing_bucket = f"codepipeline-us-east-1-missing-{uuid.uuid4().hex[:8]}"
    output = pipeline.artifact("BuildOutput", "out/build.zip", bucket=missing_bucket)
    job_id = pipeline.in_progress_job(outputs=[output])

    with pytest.raises(grpc.RpcError) as refused:
        pipeline.upload(job_id, "BuildOutput", b"built")

    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert details_of(refused.value)["ErrorInfo"].reason == "NoSuchBucket"
    assert missing_bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
