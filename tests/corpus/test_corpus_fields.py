"""Every constraint of every field of the five job-worker RPCs, broken one case at a time.

Each case starts from a request that passes the edge (see the control tests at the bottom), breaks
one constraint, and expects INVALID_ARGUMENT whose google.rpc.BadRequest names exactly the broken
fields, with the emulator's call counts unchanged and the gateway SERVING afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from corpus_protos import jobworker as pb
from corpus_protos import rpc
from corpus_wire import JOB_WORKER

JOB_ID = "f4f4ff82-2d11-4a2b-9c3d-0123456789ab"
INT32_MIN = -(2**31)


@dataclass
class FieldCase:
    rpc: str
    what: str
    request: bytes
    fields: list[str]

    def __str__(self) -> str:
        return f"{self.rpc} with {self.what} is INVALID_ARGUMENT naming {', '.join(self.fields)}"


# --- valid requests, which each case changes in one place -------------------------------------


def action_type(**changes) -> pb.ActionTypeId:
    values = dict(category=pb.ACTION_CATEGORY_BUILD, owner=pb.ACTION_OWNER_CUSTOM,
                  provider="DemoBuilder", version="1")
    values.update(changes)
    return pb.ActionTypeId(**values)


def poll(**changes) -> bytes:
    values = dict(action_type_id=action_type(), max_batch_size=1)
    values.update(changes)
    return pb.PollForJobsRequest(**{k: v for k, v in values.items() if v is not None}).SerializeToString()


def ack(**changes) -> bytes:
    values = dict(job_id=JOB_ID, nonce="1")
    values.update(changes)
    return pb.AcknowledgeJobRequest(**values).SerializeToString()


def details(**changes) -> bytes:
    values = dict(job_id=JOB_ID)
    values.update(changes)
    return pb.GetJobDetailsRequest(**values).SerializeToString()


def success(**changes) -> bytes:
    values = dict(job_id=JOB_ID)
    values.update(changes)
    return pb.PutJobSuccessResultRequest(**values).SerializeToString()


def revision(**changes) -> bytes:
    values = dict(revision="r1", change_identifier="c1")
    values.update(changes)
    return success(current_revision=pb.CurrentRevision(**values))


def execution(**changes) -> bytes:
    return success(execution_details=pb.ExecutionDetails(**changes))


def failure(job_id: str = JOB_ID, **changes) -> bytes:
    values = dict(type=pb.FAILURE_TYPE_JOB_FAILED, message="failed")
    values.update(changes)
    return pb.PutJobFailureResultRequest(job_id=job_id, failure_details=pb.FailureDetails(**values)).SerializeToString()


def raw_action_type_category(number_varint: bytes) -> bytes:
    """A PollForJobsRequest written byte by byte, its action type's category (field 1, varint)
    set to `number_varint`: what a client built from a newer proto would send."""
    inner = b"\x08" + number_varint + b"\x10\x03" + b"\x1a\x0bDemoBuilder" + b"\x22\x011"
    return b"\x0a" + bytes([len(inner)]) + inner + b"\x10\x01"


# --- the corpus --------------------------------------------------------------------------------

POLL = "PollForJobs"
ACK = "AcknowledgeJob"
DETAILS = "GetJobDetails"
SUCCESS = "PutJobSuccessResult"
FAILURE = "PutJobFailureResult"

CASES = [
    # PollForJobs: action_type_id
    FieldCase(POLL, "no action_type_id", poll(action_type_id=None), ["action_type_id"]),
    FieldCase(POLL, "category ACTION_CATEGORY_UNSPECIFIED", poll(action_type_id=action_type(category=0)),
              ["action_type_id.category"]),
    FieldCase(POLL, "the unknown category number 99", poll(action_type_id=action_type(category=99)),
              ["action_type_id.category"]),
    FieldCase(POLL, "the unknown category number 99 written as raw protobuf bytes",
              raw_action_type_category(b"\x63"), ["action_type_id.category"]),
    FieldCase(POLL, "the negative category number -1", poll(action_type_id=action_type(category=-1)),
              ["action_type_id.category"]),
    FieldCase(POLL, "owner ACTION_OWNER_UNSPECIFIED", poll(action_type_id=action_type(owner=0)),
              ["action_type_id.owner"]),
    FieldCase(POLL, "the unknown owner number 99", poll(action_type_id=action_type(owner=99)),
              ["action_type_id.owner"]),
    FieldCase(POLL, "owner ACTION_OWNER_AWS (not CUSTOM)", poll(action_type_id=action_type(owner=pb.ACTION_OWNER_AWS)),
              ["action_type_id.owner"]),
    FieldCase(POLL, "owner ACTION_OWNER_THIRD_PARTY (not CUSTOM)",
              poll(action_type_id=action_type(owner=pb.ACTION_OWNER_THIRD_PARTY)), ["action_type_id.owner"]),
    FieldCase(POLL, "an empty provider", poll(action_type_id=action_type(provider="")), ["action_type_id.provider"]),
    FieldCase(POLL, "a 36-character provider", poll(action_type_id=action_type(provider="p" * 36)),
              ["action_type_id.provider"]),
    FieldCase(POLL, "a provider containing a dot", poll(action_type_id=action_type(provider="Demo.Builder")),
              ["action_type_id.provider"]),
    FieldCase(POLL, "a provider containing a space", poll(action_type_id=action_type(provider="Demo Builder")),
              ["action_type_id.provider"]),
    FieldCase(POLL, "a provider containing a non-ASCII letter", poll(action_type_id=action_type(provider="Démo")),
              ["action_type_id.provider"]),
    FieldCase(POLL, "an empty version", poll(action_type_id=action_type(version="")), ["action_type_id.version"]),
    FieldCase(POLL, "a 10-character version", poll(action_type_id=action_type(version="1" * 10)),
              ["action_type_id.version"]),
    FieldCase(POLL, "a version containing a dot", poll(action_type_id=action_type(version="1.0")),
              ["action_type_id.version"]),
    FieldCase(POLL, "every action_type_id field broken and max_batch_size 0",
              poll(action_type_id=pb.ActionTypeId(category=0, owner=42, provider="", version="v/1"), max_batch_size=0),
              ["action_type_id.category", "action_type_id.owner", "action_type_id.provider",
               "action_type_id.version", "max_batch_size"]),
    # PollForJobs: max_batch_size
    FieldCase(POLL, "max_batch_size 0", poll(max_batch_size=0), ["max_batch_size"]),
    FieldCase(POLL, "max_batch_size -1", poll(max_batch_size=-1), ["max_batch_size"]),
    FieldCase(POLL, "max_batch_size -2147483648", poll(max_batch_size=INT32_MIN), ["max_batch_size"]),
    # PollForJobs: query_param
    FieldCase(POLL, "two query_param entries", poll(query_param={"a": "x", "b": "y"}), ["query_param"]),
    FieldCase(POLL, "an empty query_param key", poll(query_param={"": "x"}), ["query_param.key"]),
    FieldCase(POLL, "a 51-character query_param key", poll(query_param={"k" * 51: "x"}), ["query_param.key"]),
    FieldCase(POLL, "an empty query_param value", poll(query_param={"Project": ""}), ["query_param.value"]),
    FieldCase(POLL, "a 51-character query_param value", poll(query_param={"Project": "v" * 51}),
              ["query_param.value"]),
    FieldCase(POLL, "a query_param value containing a space", poll(query_param={"Project": "my app"}),
              ["query_param.value"]),
    FieldCase(POLL, "a query_param value containing a slash", poll(query_param={"Project": "a/b"}),
              ["query_param.value"]),
    # AcknowledgeJob
    FieldCase(ACK, "an empty job_id", ack(job_id=""), ["job_id"]),
    FieldCase(ACK, "an uppercase job_id", ack(job_id=JOB_ID.upper()), ["job_id"]),
    FieldCase(ACK, "a job_id one character short", ack(job_id=JOB_ID[:-1]), ["job_id"]),
    FieldCase(ACK, "a job_id one character long", ack(job_id=JOB_ID + "0"), ["job_id"]),
    FieldCase(ACK, "a job_id with a sixth group", ack(job_id=JOB_ID + "-00"), ["job_id"]),
    FieldCase(ACK, "a job_id without dashes", ack(job_id=JOB_ID.replace("-", "")), ["job_id"]),
    FieldCase(ACK, "a job_id containing a non-hex letter", ack(job_id="g" + JOB_ID[1:]), ["job_id"]),
    FieldCase(ACK, "a job_id with a trailing space", ack(job_id=JOB_ID + " "), ["job_id"]),
    FieldCase(ACK, "an empty nonce", ack(nonce=""), ["nonce"]),
    FieldCase(ACK, "a 51-character nonce", ack(nonce="n" * 51), ["nonce"]),
    FieldCase(ACK, "a nonce of 51 two-byte characters", ack(nonce="é" * 51), ["nonce"]),
    FieldCase(ACK, "no fields at all", b"", ["job_id", "nonce"]),
    # GetJobDetails
    FieldCase(DETAILS, "an empty job_id", details(job_id=""), ["job_id"]),
    FieldCase(DETAILS, "an uppercase job_id", details(job_id=JOB_ID.upper()), ["job_id"]),
    FieldCase(DETAILS, "the job_id 'not-a-job'", details(job_id="not-a-job"), ["job_id"]),
    # PutJobSuccessResult: job_id, continuation_token, output_variables
    FieldCase(SUCCESS, "an empty job_id", success(job_id=""), ["job_id"]),
    FieldCase(SUCCESS, "a short job_id", success(job_id=JOB_ID[:8]), ["job_id"]),
    FieldCase(SUCCESS, "an empty continuation_token", success(continuation_token=""), ["continuation_token"]),
    FieldCase(SUCCESS, "a 2049-character continuation_token", success(continuation_token="t" * 2049),
              ["continuation_token"]),
    FieldCase(SUCCESS, "output_variables alongside a continuation_token",
              success(continuation_token="next", output_variables={"Result": "ok"}), ["output_variables"]),
    FieldCase(SUCCESS, "an output variable key containing a space", success(output_variables={"bad key": "v"}),
              ['output_variables["bad key"]']),
    FieldCase(SUCCESS, "an output variable key containing a dot", success(output_variables={"a.b": "v"}),
              ['output_variables["a.b"]']),
    FieldCase(SUCCESS, "an empty output variable key", success(output_variables={"": "v"}),
              ['output_variables[""]']),
    # PutJobSuccessResult: execution_details
    FieldCase(SUCCESS, "an empty execution summary", execution(summary=""), ["execution_details.summary"]),
    FieldCase(SUCCESS, "a 2049-character execution summary", execution(summary="s" * 2049),
              ["execution_details.summary"]),
    FieldCase(SUCCESS, "an empty external_execution_id", execution(external_execution_id=""),
              ["execution_details.external_execution_id"]),
    FieldCase(SUCCESS, "a 1501-character external_execution_id", execution(external_execution_id="e" * 1501),
              ["execution_details.external_execution_id"]),
    FieldCase(SUCCESS, "percent_complete -1", execution(percent_complete=-1), ["execution_details.percent_complete"]),
    FieldCase(SUCCESS, "percent_complete 101", execution(percent_complete=101), ["execution_details.percent_complete"]),
    FieldCase(SUCCESS, "every execution_details field out of bounds",
              execution(summary="", external_execution_id="", percent_complete=256),
              ["execution_details.summary", "execution_details.external_execution_id",
               "execution_details.percent_complete"]),
    # PutJobSuccessResult: current_revision
    FieldCase(SUCCESS, "an empty current_revision", success(current_revision=pb.CurrentRevision()),
              ["current_revision.revision", "current_revision.change_identifier"]),
    FieldCase(SUCCESS, "an empty revision", revision(revision=""), ["current_revision.revision"]),
    FieldCase(SUCCESS, "a 1501-character revision", revision(revision="r" * 1501), ["current_revision.revision"]),
    FieldCase(SUCCESS, "an empty change_identifier", revision(change_identifier=""),
              ["current_revision.change_identifier"]),
    FieldCase(SUCCESS, "a 101-character change_identifier", revision(change_identifier="c" * 101),
              ["current_revision.change_identifier"]),
    FieldCase(SUCCESS, "an empty revision_summary", revision(revision_summary=""),
              ["current_revision.revision_summary"]),
    FieldCase(SUCCESS, "a 2049-character revision_summary", revision(revision_summary="s" * 2049),
              ["current_revision.revision_summary"]),
    FieldCase(SUCCESS, "a created timestamp after year 9999",
              revision(created={"seconds": 253_402_300_800}), ["current_revision.created"]),
    FieldCase(SUCCESS, "a created timestamp with negative nanos",
              revision(created={"seconds": 0, "nanos": -1}), ["current_revision.created"]),
    FieldCase(SUCCESS, "a created timestamp with a billion nanos",
              revision(created={"seconds": 0, "nanos": 1_000_000_000}), ["current_revision.created"]),
    # PutJobFailureResult
    FieldCase(FAILURE, "an uppercase job_id", failure(job_id=JOB_ID.upper()), ["job_id"]),
    FieldCase(FAILURE, "no failure_details", pb.PutJobFailureResultRequest(job_id=JOB_ID).SerializeToString(),
              ["failure_details"]),
    FieldCase(FAILURE, "neither a valid job_id nor failure_details",
              pb.PutJobFailureResultRequest(job_id="x").SerializeToString(), ["job_id", "failure_details"]),
    FieldCase(FAILURE, "failure type FAILURE_TYPE_UNSPECIFIED", failure(type=0), ["failure_details.type"]),
    FieldCase(FAILURE, "the unknown failure type number 99", failure(type=99), ["failure_details.type"]),
    FieldCase(FAILURE, "an empty failure message", failure(message=""), ["failure_details.message"]),
    FieldCase(FAILURE, "a 5001-character failure message", failure(message="m" * 5001), ["failure_details.message"]),
    FieldCase(FAILURE, "an empty failure external_execution_id", failure(external_execution_id=""),
              ["failure_details.external_execution_id"]),
    FieldCase(FAILURE, "a 1501-character failure external_execution_id", failure(external_execution_id="e" * 1501),
              ["failure_details.external_execution_id"]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_broken_field_is_refused_at_the_edge(gateway, case: FieldCase):
    before = gateway.call_counts()

    answer = gateway.call(JOB_WORKER + case.rpc, case.request)

    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, str(answer)
    # Compared as sets of fields: the violations' order is not part of the contract.
    assert sorted(answer.violated_fields) == sorted(case.fields), str(answer)
    bad_request = answer.detail(rpc.BadRequest)
    assert all(v.description for v in bad_request.field_violations), str(answer)
    assert answer.message.startswith("invalid request: "), str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


# --- controls: the requests the cases start from do pass the edge ------------------------------


@dataclass
class Control:
    rpc: str
    what: str
    request: bytes
    code: grpc.StatusCode  # the emulator's answer: no job exists, so most calls are NOT_FOUND

    def __str__(self) -> str:
        return f"{self.rpc} with {self.what} passes the edge and reaches the emulator"


NOT_FOUND = grpc.StatusCode.NOT_FOUND
CONTROLS = [
    Control(POLL, "the valid request the cases start from", poll(), grpc.StatusCode.OK),
    Control(POLL, "a 50-character query_param and the largest max_batch_size",
            poll(query_param={"k" * 50: "my-app_1" + "v" * 42}, max_batch_size=2**31 - 1), grpc.StatusCode.OK),
    Control(ACK, "a nonce of 50 two-byte characters", ack(nonce="é" * 50), NOT_FOUND),
    Control(DETAILS, "the valid request the cases start from", details(), NOT_FOUND),
    Control(SUCCESS, "every current_revision and execution_details field at its upper bound",
            success(current_revision=pb.CurrentRevision(revision="r" * 1500, change_identifier="c" * 100,
                                                        revision_summary="s" * 2048,
                                                        created={"seconds": 253_402_300_799, "nanos": 999_999_999}),
                    execution_details=pb.ExecutionDetails(summary="s" * 2048, external_execution_id="e" * 1500,
                                                          percent_complete=100),
                    output_variables={"A-z_0@9": ""}),
            NOT_FOUND),
    Control(SUCCESS, "a 2048-character continuation_token and percent_complete 0",
            success(continuation_token="t" * 2048, execution_details=pb.ExecutionDetails(percent_complete=0)),
            NOT_FOUND),
    Control(FAILURE, "a 5000-character message and a 1500-character external_execution_id",
            failure(message="m" * 5000, external_execution_id="e" * 1500), NOT_FOUND),
]


@pytest.mark.parametrize("control", CONTROLS, ids=str)
def test_a_valid_request_passes_the_edge_and_is_counted(gateway, control: Control):
    """Without these, "the call counts did not change" would prove nothing: a request at the
    bounds of every constraint does reach the emulator, and is counted there."""
    before = gateway.call_counts()

    answer = gateway.call(JOB_WORKER + control.rpc, control.request)

    assert answer.code == control.code, str(answer)
    if control.code == NOT_FOUND:
        assert answer.reason == "JobNotFoundException", str(answer)
    after = gateway.call_counts()
    assert after.get(control.rpc, 0) == before.get(control.rpc, 0) + 1, \
        f"{control.rpc} was not counted: {before} -> {after}"
    gateway.assert_serving()
