"""Another team's client, with a valid token allowed every RPC, reaching for the first team's
jobs: every poll of their action type and every call on one of their jobs is PERMISSION_DENIED
with ErrorInfo ACTION_TYPE_NOT_ALLOWED, before anything reaches the emulator, and the job stays
as it was. The job is one the gateway handed out itself, so it knows its action type.
"""

from __future__ import annotations

import grpc
import pytest

from corpus_protos import emulator, rpc
from corpus_protos import jobworker as pb
from corpus_wire import EMULATOR_ADMIN, JOB_WORKER

ARTIFACTS = "/codepipeline.jobworker.v1.ArtifactService/"
THIRD_PARTY = "/codepipeline.jobworker.v1.ThirdPartyJobWorkerService/"
DEMO = pb.ActionTypeId(category=pb.ACTION_CATEGORY_BUILD, owner=pb.ACTION_OWNER_CUSTOM, provider="DemoBuilder",
                       version="1")
DEMO_PARTNER = pb.ActionTypeId(category=pb.ACTION_CATEGORY_BUILD, owner=pb.ACTION_OWNER_THIRD_PARTY,
                               provider="DemoPartner", version="1")


@pytest.fixture(scope="module")
def dispatched(gateway) -> tuple[str, str]:
    """A demo job created by the admin and handed to the first team's `worker`: (id, nonce)."""
    created = gateway.call(EMULATOR_ADMIN + "CreateJob",
                           emulator.CreateJobRequest(action_type_id=DEMO).SerializeToString(), client="admin")
    assert created.code == grpc.StatusCode.OK, str(created)
    job_id = emulator.CreateJobResponse.FromString(created.body).job_id
    polled = gateway.call(JOB_WORKER + "PollForJobs",
                          pb.PollForJobsRequest(action_type_id=DEMO, max_batch_size=10).SerializeToString())
    assert polled.code == grpc.StatusCode.OK, str(polled)
    (job,) = [job for job in pb.PollForJobsResponse.FromString(polled.body).jobs if job.id == job_id]
    return job.id, job.nonce


def job_calls(job_id: str, nonce: str) -> dict[str, tuple[str, bytes]]:
    artifact_job = pb.ArtifactJob(job_id=job_id)
    return {
        "AcknowledgeJob": (JOB_WORKER + "AcknowledgeJob", pb.AcknowledgeJobRequest(job_id=job_id, nonce=nonce)),
        "GetJobDetails": (JOB_WORKER + "GetJobDetails", pb.GetJobDetailsRequest(job_id=job_id)),
        "PutJobSuccessResult": (JOB_WORKER + "PutJobSuccessResult", pb.PutJobSuccessResultRequest(job_id=job_id)),
        "PutJobFailureResult": (JOB_WORKER + "PutJobFailureResult", pb.PutJobFailureResultRequest(
            job_id=job_id, failure_details=pb.FailureDetails(type=pb.FAILURE_TYPE_JOB_FAILED, message="not yours"))),
        "DownloadInputArtifact": (ARTIFACTS + "DownloadInputArtifact",
                                  pb.DownloadInputArtifactRequest(job=artifact_job, artifact_name="source")),
    }


CALLS = list(job_calls("x", "y"))


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"another team's {call} on a job it does not own")
def test_another_teams_call_on_a_job_is_refused_before_any_upstream_call(gateway, dispatched, call: str):
    job_id, nonce = dispatched
    path, request = job_calls(job_id, nonce)[call]
    before = gateway.call_counts()

    answer = gateway.call(path, request.SerializeToString(), client="other_team")

    assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_TYPE_NOT_ALLOWED"), str(answer)
    info = answer.detail(rpc.ErrorInfo)
    assert dict(info.metadata) == {"client_id": "other_team", "job_id": job_id}, str(answer)
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


@pytest.mark.parametrize(
    ("path", "request_message"),
    [
        pytest.param(JOB_WORKER + "PollForJobs", pb.PollForJobsRequest(action_type_id=DEMO, max_batch_size=1),
                     id="another team's PollForJobs of the demo action type"),
        pytest.param(THIRD_PARTY + "PollForThirdPartyJobs",
                     pb.PollForThirdPartyJobsRequest(action_type_id=DEMO_PARTNER, max_batch_size=1),
                     id="another team's PollForThirdPartyJobs of the demo partner action type"),
    ],
)
def test_another_teams_poll_is_refused_naming_the_action_type(gateway, path: str, request_message):
    before = gateway.call_counts()

    answer = gateway.call(path, request_message.SerializeToString(), client="other_team")

    assert (answer.code, answer.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_TYPE_NOT_ALLOWED"), str(answer)
    action_type = request_message.action_type_id
    owner = "Custom" if action_type.owner == pb.ACTION_OWNER_CUSTOM else "ThirdParty"
    expected = f"Build/{owner}/{action_type.provider}/1"
    assert dict(answer.detail(rpc.ErrorInfo).metadata) == {"client_id": "other_team", "action_type": expected}
    gateway.assert_no_upstream_call_since(before)
    gateway.assert_serving()


def test_the_job_is_unchanged_and_still_its_owners(gateway, dispatched):
    """The control: after every refusal above, the job is Dispatched as it was, and the team it
    belongs to acknowledges it."""
    job_id, nonce = dispatched
    for call in CALLS:
        path, request = job_calls(job_id, nonce)[call]
        gateway.call(path, request.SerializeToString(), client="other_team")
    state = gateway.call(EMULATOR_ADMIN + "GetJob", emulator.GetJobRequest(job_id=job_id).SerializeToString(),
                         client="admin")
    job = emulator.GetJobResponse.FromString(state.body).job
    assert (job.status, job.acknowledge_count, job.result_count) == (pb.JOB_STATUS_DISPATCHED, 0, 0), str(job)

    answer = gateway.call(JOB_WORKER + "AcknowledgeJob",
                          pb.AcknowledgeJobRequest(job_id=job_id, nonce=nonce).SerializeToString())
    assert answer.code == grpc.StatusCode.OK, str(answer)
