"""The project's protobuf messages, compiled at test time from proto/ and proto-deps/.

grpcio-tools' protoc turns the .proto files into one FileDescriptorSet in a temporary directory,
and the message classes are made from it in a private descriptor pool. Nothing is generated into
the repository, and nothing clashes with a `google.rpc` package installed in the same venv.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

REPO_ROOT = Path(__file__).resolve().parents[2]

PROTO_FILES = (
    "codepipeline/jobworker/v1/job_worker.proto",
    "codepipeline/emulator/v1/emulator_admin.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)

# google.rpc.Status as googleapis defines it: the message carried in `grpc-status-details-bin`.
# proto-deps/ holds only error_details.proto, so the status is written out here when missing.
STATUS_PROTO = """\
syntax = "proto3";
package google.rpc;
import "google/protobuf/any.proto";
message Status {
  int32 code = 1;
  string message = 2;
  repeated google.protobuf.Any details = 3;
}
"""


def _compile() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    workdir = Path(tempfile.mkdtemp(prefix="corpus-protos-"))
    try:
        extra = workdir / "include"
        if not (REPO_ROOT / "proto-deps/google/rpc/status.proto").is_file():
            (extra / "google/rpc").mkdir(parents=True)
            (extra / "google/rpc/status.proto").write_text(STATUS_PROTO)
        well_known = resources.files("grpc_tools") / "_proto"
        out = workdir / "descriptors.binpb"
        args = [
            "protoc",
            f"-I{REPO_ROOT / 'proto'}",
            f"-I{REPO_ROOT / 'proto-deps'}",
            f"-I{extra}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILES}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


POOL = descriptor_pool.DescriptorPool()
for _file in _compile().file:
    POOL.Add(_file)


def message(full_name: str):
    """The message class of a fully qualified protobuf message name."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def enum_value(full_name: str, value_name: str) -> int:
    """The number of an enum value, e.g. enum_value("codepipeline.jobworker.v1.ActionOwner",
    "ACTION_OWNER_CUSTOM") == 3."""
    return POOL.FindEnumTypeByName(full_name).values_by_name[value_name].number


class jobworker:  # noqa: N801 - reads like the proto package in the cases
    """codepipeline.jobworker.v1 messages and enum numbers."""

    PollForJobsRequest = message("codepipeline.jobworker.v1.PollForJobsRequest")
    AcknowledgeJobRequest = message("codepipeline.jobworker.v1.AcknowledgeJobRequest")
    GetJobDetailsRequest = message("codepipeline.jobworker.v1.GetJobDetailsRequest")
    PutJobSuccessResultRequest = message("codepipeline.jobworker.v1.PutJobSuccessResultRequest")
    PutJobFailureResultRequest = message("codepipeline.jobworker.v1.PutJobFailureResultRequest")
    ActionTypeId = message("codepipeline.jobworker.v1.ActionTypeId")
    CurrentRevision = message("codepipeline.jobworker.v1.CurrentRevision")
    ExecutionDetails = message("codepipeline.jobworker.v1.ExecutionDetails")
    FailureDetails = message("codepipeline.jobworker.v1.FailureDetails")
    PollForJobsResponse = message("codepipeline.jobworker.v1.PollForJobsResponse")
    PollForThirdPartyJobsRequest = message("codepipeline.jobworker.v1.PollForThirdPartyJobsRequest")
    ArtifactJob = message("codepipeline.jobworker.v1.ArtifactJob")
    DownloadInputArtifactRequest = message("codepipeline.jobworker.v1.DownloadInputArtifactRequest")

    ACTION_CATEGORY_BUILD = enum_value("codepipeline.jobworker.v1.ActionCategory", "ACTION_CATEGORY_BUILD")
    ACTION_OWNER_AWS = enum_value("codepipeline.jobworker.v1.ActionOwner", "ACTION_OWNER_AWS")
    ACTION_OWNER_THIRD_PARTY = enum_value("codepipeline.jobworker.v1.ActionOwner", "ACTION_OWNER_THIRD_PARTY")
    ACTION_OWNER_CUSTOM = enum_value("codepipeline.jobworker.v1.ActionOwner", "ACTION_OWNER_CUSTOM")
    FAILURE_TYPE_JOB_FAILED = enum_value("codepipeline.jobworker.v1.FailureType", "FAILURE_TYPE_JOB_FAILED")
    JOB_STATUS_DISPATCHED = enum_value("codepipeline.jobworker.v1.JobStatus", "JOB_STATUS_DISPATCHED")


class emulator:  # noqa: N801
    """codepipeline.emulator.v1 messages."""

    GetCallCountsRequest = message("codepipeline.emulator.v1.GetCallCountsRequest")
    GetCallCountsResponse = message("codepipeline.emulator.v1.GetCallCountsResponse")
    CreateJobRequest = message("codepipeline.emulator.v1.CreateJobRequest")
    CreateJobResponse = message("codepipeline.emulator.v1.CreateJobResponse")
    GetJobRequest = message("codepipeline.emulator.v1.GetJobRequest")
    GetJobResponse = message("codepipeline.emulator.v1.GetJobResponse")


class rpc:  # noqa: N801
    """google.rpc messages: the status in `grpc-status-details-bin` and its details."""

    Status = message("google.rpc.Status")
    BadRequest = message("google.rpc.BadRequest")
    ErrorInfo = message("google.rpc.ErrorInfo")
    RetryInfo = message("google.rpc.RetryInfo")
    QuotaFailure = message("google.rpc.QuotaFailure")
    ResourceInfo = message("google.rpc.ResourceInfo")

    BY_TYPE_URL = {
        f"type.googleapis.com/{cls.DESCRIPTOR.full_name}": cls
        for cls in (BadRequest, ErrorInfo, RetryInfo, QuotaFailure, ResourceInfo)
    }


class health:  # noqa: N801
    """grpc.health.v1 Check, by hand: HealthCheckRequest{service=1} and
    HealthCheckResponse{status=1}, SERVING = 1."""

    SERVING = 1

    @staticmethod
    def check_request(service: str = "") -> bytes:
        encoded = service.encode()
        return b"\x0a" + bytes([len(encoded)]) + encoded if encoded else b""

    @staticmethod
    def status_of(response: bytes) -> int:
        # field 1, varint: 0x08 <status>; an empty message is UNKNOWN (0).
        if not response:
            return 0
        if response[0] != 0x08 or len(response) != 2:
            raise ValueError(f"not a HealthCheckResponse: {response!r}")
        return response[1]
