"""The Python worker as a third-party (partner) worker, ACTION_OWNER=ThirdParty: it polls
PollForThirdPartyJobs, reads each job's details and nonce, acknowledges, works and reports, with
the client token the gateway holds for the job's client (--client-token-file) or with its own
(CLIENT_TOKEN); the emulator's records prove each job ended as it asked. With no token anywhere,
or a wrong one, it says so on each job and leaves the job alone. No client token ever appears in
its output. A third-party worker asked to stream, or an unknown owner, is a configuration error.
"""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from gateway_process import DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN
from workers_support import WORKER_READY, Emulator, wait_until

CLIENT_TOKEN_FILE = "examples/client-tokens.toml"  # the demo client's token, as docs/third-party-actions.md shows
THIRD_PARTY = {"ACTION_OWNER": "ThirdParty", "ACTION_PROVIDER": "DemoPartner", "POLL_INTERVAL": 0.2}
# The pool's jobs, by Outcome: "bogus" fails as a configuration error, "continue" makes a follow-up.
OUTCOMES = ("succeed", "succeed", "fail", "continue", "bogus")
REPORTED_AS = {"succeed": "succeeded", "fail": "failed", "continue": "continued", "bogus": "failed"}


def metrics_of(gateway) -> str:
    """The gateway's Prometheus metrics (the address it printed before its gRPC one)."""
    [address] = re.findall(r"metrics listening on (\S+)", "\n".join(gateway._stdout_seen))
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return response.read().decode()


def supplied_tokens(gateway, client_from: str) -> int:
    series = rf'^gateway_client_tokens_supplied_total{{client_from="{client_from}"}} (\d+)$'
    found = re.search(series, metrics_of(gateway), re.MULTILINE)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize("own_token", [False, True], ids=["token-held-by-the-gateway", "worker-s-own-token"])
def test_third_party_worker_does_each_job_as_it_asks(own_token, pb, start_gateway, start_worker):
    jw = pb.jobworker
    # With its own token: a gateway without a client-token file, so only the worker's can work.
    gateway = start_gateway() if own_token else start_gateway("--client-token-file", CLIENT_TOKEN_FILE)
    with grpc.insecure_channel(gateway.address) as channel:
        emulator = Emulator(pb, channel)
        if own_token:  # a new client, whose token the emulator makes with its first job
            first = emulator.create_third_party_job(Outcome=OUTCOMES[0], WorkMillis="30")
            client_id, client_token, created = first.client_id, first.client_token, [first]
        else:  # the demo client, whose token is in the client-token file
            client_id, client_token, created = DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN, []
        created += [
            emulator.create_third_party_job(client_id, client_token, Outcome=outcome, WorkMillis="30")
            for outcome in OUTCOMES[len(created):]
        ]
        worker_settings = {"CLIENT_TOKEN": client_token} if own_token else {}
        pool = {job.job_id: outcome for job, outcome in zip(created, OUTCOMES)}
        name = "python-partner"
        worker = start_worker("python", name, GATEWAY_ADDRESS=gateway.address, **THIRD_PARTY, **worker_settings)
        worker.wait_for(WORKER_READY)

        final = {jw.JOB_STATUS_SUCCEEDED, jw.JOB_STATUS_FAILED}
        expected = len(pool) + 1  # and the follow-up of the one that continues

        def all_final():
            jobs = [job for job in emulator.jobs() if job.action_type_id.owner == jw.ACTION_OWNER_THIRD_PARTY]
            return jobs if len(jobs) == expected and all(job.status in final for job in jobs) else None

        jobs = {job.job_id: job for job in wait_until(all_final, 30, "the third-party jobs", explain=worker.output)}
    assert worker.stop() == 0, worker.output()
    output = worker.output()

    # Polling is the default for third-party jobs; the worker says whose tokens it uses.
    assert "polling for ACTION_CATEGORY_BUILD/ThirdParty/DemoPartner/1" in output
    assert ("client tokens: its own" if worker_settings else "client tokens: those the gateway holds") in output

    for job_id, outcome in pool.items():
        job = jobs[job_id]
        assert (job.acknowledge_count, job.result_count, job.client_id) == (1, 1, client_id), job
        if outcome == "fail":
            assert job.status == jw.JOB_STATUS_FAILED, job
            assert job.failure_details.type == jw.FAILURE_TYPE_JOB_FAILED
            assert job.failure_details.external_execution_id == f"{name}:{job_id}"
        elif outcome == "bogus":
            assert job.status == jw.JOB_STATUS_FAILED, job
            assert job.failure_details.type == jw.FAILURE_TYPE_CONFIGURATION_ERROR
            assert "Outcome=bogus" in job.failure_details.message
        else:
            assert job.status == jw.JOB_STATUS_SUCCEEDED, job
            assert job.execution_details.external_execution_id == f"{name}:{job_id}"
            assert not job.output_variables
        if outcome == "continue":
            follow_up = jobs[job.continued_by_job_id]
            assert (follow_up.continues_job_id, follow_up.continuation_token) == (job_id, "continued")
            assert follow_up.status == jw.JOB_STATUS_SUCCEEDED, follow_up
            assert (follow_up.acknowledge_count, follow_up.result_count) == (1, 1), follow_up
        else:
            assert not job.HasField("continued_by_job_id"), job
    # The worker says it reported each job, the follow-up too (which succeeds), once.
    assert sorted(worker.reported()) == sorted(
        (job_id, REPORTED_AS[pool.get(job_id, "succeed")]) for job_id in jobs
    ), output

    if not own_token:
        # Three calls per job, each naming the job's client: the gateway knew it from the request
        # (which works on any replica), never had to fall back on what its own poll saw.
        assert supplied_tokens(gateway, "request") == 3 * len(jobs)
        assert supplied_tokens(gateway, "poll") == 0
    assert client_token not in output and DEMO_CLIENT_TOKEN not in output


@pytest.mark.parametrize(
    ("case", "settings", "complaint"),
    [
        ("no token anywhere", {}, "FAILED_PRECONDITION CLIENT_TOKEN_UNAVAILABLE"),
        ("a wrong token", {"CLIENT_TOKEN": "not-the-demo-client-token-4c1e"}, "PERMISSION_DENIED"),
    ],
    ids=["no-token-anywhere", "wrong-token"],
)
def test_third_party_worker_without_a_usable_client_token_says_so_and_leaves_the_job_alone(
    case, settings, complaint, pb, start_gateway, start_worker
):
    gateway = start_gateway()  # no client-token file; jobs handed out again after 2 s
    with grpc.insecure_channel(gateway.address) as channel:
        emulator = Emulator(pb, channel)
        job_id = emulator.create_third_party_job(DEMO_CLIENT_ID, DEMO_CLIENT_TOKEN, Outcome="succeed").job_id
        worker = start_worker("python", "python-tokenless", GATEWAY_ADDRESS=gateway.address, **THIRD_PARTY, **settings)
        # Each time the job is handed out the worker says why it cannot take it, and goes on
        # polling: other clients' jobs may well have their tokens.
        wait_until(
            lambda: worker.output().count(f"job {job_id}: {complaint}") >= 2, 20, "two complaints",
            explain=worker.output,
        )  # fmt: skip
        job = emulator.job(job_id)
    assert worker.process.poll() is None, worker.output()
    assert worker.stop() == 0, worker.output()
    output = worker.output()
    assert f"client {DEMO_CLIENT_ID}: set CLIENT_TOKEN, or give the gateway a --client-token-file" in output
    assert "Traceback" not in output, output
    assert (job.acknowledge_count, job.result_count) == (0, 0), job
    assert job.status not in (pb.jobworker.JOB_STATUS_SUCCEEDED, pb.jobworker.JOB_STATUS_FAILED), job
    assert DEMO_CLIENT_TOKEN not in output
    assert not settings or settings["CLIENT_TOKEN"] not in output


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"ACTION_OWNER": "ThirdParty", "GATEWAY_MODE": "stream"}, "third-party actions have no job feed"),
        ({"ACTION_OWNER": "AWS"}, "ACTION_OWNER must be Custom or ThirdParty, not 'AWS'"),
    ],
    ids=["third-party-streaming", "aws-owner"],
)
def test_an_impossible_owner_or_mode_is_a_configuration_error(settings, complaint, start_worker):
    worker = start_worker("python", "python-misconfigured", GATEWAY_ADDRESS="127.0.0.1:9", **settings)
    assert worker.process.wait(timeout=20) == 1, worker.output()
    assert complaint in worker.output()
