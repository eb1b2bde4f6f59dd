"""The example workers in Python, Go, Node and Java share one job pool behind one gateway, polling
or on the job feed (StreamJobs) or both at once, and the emulator's own records prove that every
job was done exactly once, as it asked, by one worker."""

from __future__ import annotations

import collections
import hashlib
import re
from pathlib import Path

import grpc
import pytest

from workers_support import LANGUAGES, MODES, WORKER_READY, BearerToken, Emulator, alternating_modes, wait_until

POOL_SIZE = 60
ALL_DONE_TIMEOUT_SECONDS = 60


def outcome_of(index: int) -> str:
    """12 jobs fail, 18 continue once, 30 succeed, mixed through the pool."""
    return {0: "fail", 1: "fail", 2: "continue", 3: "continue", 4: "continue"}.get(index % 10, "succeed")


def create_pool(emulator, size: int = POOL_SIZE) -> dict[str, str]:
    """Creates `size` jobs, each with an Outcome and a little work (50..250 ms); returns
    job id -> Outcome."""
    pool = {}
    for index in range(size):
        outcome = outcome_of(index)
        configuration = {"WorkMillis": str(50 + index * 37 % 200)}
        if outcome != "succeed" or index % 20 == 5:  # some succeed by default, some say so
            configuration["Outcome"] = outcome
        pool[emulator.create_job(**configuration)] = outcome
    return pool


def wait_until_all_final(emulator, pb, expected_count: int, workers=()) -> list:
    final = {pb.jobworker.JOB_STATUS_SUCCEEDED, pb.jobworker.JOB_STATUS_FAILED}

    def all_final():
        jobs = emulator.jobs()
        return jobs if len(jobs) == expected_count and all(job.status in final for job in jobs) else None

    def explain() -> str:
        statuses = collections.Counter(pb.jobworker.JobStatus.Name(job.status) for job in emulator.jobs())
        logs = "".join(f"\n--- {worker.name} ---\n{worker.output()}" for worker in workers)
        return f"jobs by status: {dict(statuses)}{logs}"

    return wait_until(
        all_final, ALL_DONE_TIMEOUT_SECONDS, f"{expected_count} jobs to be final", interval=0.25, explain=explain
    )


def execution_id_of(job) -> str:
    return job.failure_details.external_execution_id or job.execution_details.external_execution_id


def check_every_job_done_once_as_asked(pb, emulator, pool: dict[str, str], workers: dict[str, object]) -> dict:
    """Waits for the pool (and its follow-ups) to be final, stops the workers, and checks that each
    job ended as it asked, acknowledged once with one result, reported by the one worker named in
    it; returns job id -> the key in `workers` of the worker that did it."""
    continuing = [job_id for job_id, outcome in pool.items() if outcome == "continue"]
    jobs = {
        job.job_id: job for job in wait_until_all_final(emulator, pb, len(pool) + len(continuing), workers.values())
    }

    exit_codes = {key: worker.stop() for key, worker in workers.items()}
    logs = "\n".join(f"--- {worker.name} ---\n{worker.output()}" for worker in workers.values())
    assert exit_codes == dict.fromkeys(workers, 0), logs

    # Every job, follow-ups included: acknowledged once, one result accepted.
    for job in jobs.values():
        assert (job.acknowledge_count, job.result_count) == (1, 1), job

    # Each pool job ended as it asked; each 'continue' job was continued by a follow-up that
    # carried the token and then succeeded.
    follow_ups = {}
    for job_id, outcome in pool.items():
        job = jobs[job_id]
        if outcome == "fail":
            assert job.status == pb.jobworker.JOB_STATUS_FAILED, job
            assert job.failure_details.type == pb.jobworker.FAILURE_TYPE_JOB_FAILED, job
            continue
        assert job.status == pb.jobworker.JOB_STATUS_SUCCEEDED, job
        assert job.execution_details.summary, job
        if outcome == "continue":
            assert job.HasField("continued_by_job_id"), job
            follow_up = jobs[job.continued_by_job_id]
            assert follow_up.continues_job_id == job_id
            assert follow_up.continuation_token == "continued"
            assert follow_up.status == pb.jobworker.JOB_STATUS_SUCCEEDED, follow_up
            assert not follow_up.HasField("continued_by_job_id"), "a follow-up must not continue again"
            follow_ups[follow_up.job_id] = job_id
        else:
            assert not job.HasField("continued_by_job_id"), job
    assert set(jobs) == set(pool) | set(follow_ups)

    # Each result names the one worker that reported it, and that worker says so too: no job
    # was reported by two workers.
    keys = {worker.name: key for key, worker in workers.items()}
    done_by = {}
    for job in jobs.values():
        name, _, job_id = execution_id_of(job).partition(":")
        assert name in keys and job_id == job.job_id, execution_id_of(job)
        done_by[job.job_id] = keys[name]
    reports = collections.Counter(job_id for worker in workers.values() for job_id, _ in worker.reported())
    assert reports == collections.Counter(jobs.keys()), logs
    for key, worker in workers.items():
        assert {job_id for job_id, _ in worker.reported()} == {job_id for job_id, by in done_by.items() if by == key}

    # The emulator accepted exactly one result call per job: no worker tried to report a job
    # that another worker had.
    calls = emulator.call_counts()
    assert calls["PutJobSuccessResult"] + calls["PutJobFailureResult"] == len(jobs), calls
    assert calls["AcknowledgeJob"] >= len(jobs), calls
    return done_by


@pytest.mark.parametrize("mode", MODES)
def test_workers_of_every_language_share_one_pool_and_do_each_job_exactly_once(
    mode, pb, gateway, emulator, start_worker
):
    slots = {"python": 3, "go": 2, "node": 4, "java": 3}
    assert set(slots) == set(LANGUAGES)
    workers = {
        language: start_worker(
            language,
            f"{language}-{mode}",
            GATEWAY_MODE=mode,
            GATEWAY_ADDRESS=gateway.address,
            MAX_IN_FLIGHT=count,
            POLL_INTERVAL=0.2,
        )  # fmt: skip
        for language, count in slots.items()
    }
    for worker in workers.values():
        worker.wait_for(WORKER_READY)
    assert all(f"{'polling' if mode == 'poll' else 'streaming'} for" in w.output() for w in workers.values())

    done_by = check_every_job_done_once_as_asked(pb, emulator, create_pool(emulator), workers)

    # Every language took part.
    assert set(done_by.values()) == set(slots), collections.Counter(done_by.values())


def test_polling_and_streaming_workers_share_one_pool(pb, gateway, emulator, start_worker):
    """Each language polling and streaming at once, on one pool: a job goes to one worker either
    way, and both modes take part."""
    workers = {
        (language, mode): start_worker(
            language,
            f"{language}-{mode}-mixed",
            GATEWAY_MODE=mode,
            GATEWAY_ADDRESS=gateway.address,
            MAX_IN_FLIGHT=2,
            POLL_INTERVAL=0.2,
        )  # fmt: skip
        for language in LANGUAGES
        for mode in MODES
    }
    for worker in workers.values():
        worker.wait_for(WORKER_READY)

    done_by = check_every_job_done_once_as_asked(pb, emulator, create_pool(emulator, size=80), workers)

    assert {mode for _, mode in done_by.values()} == set(MODES), collections.Counter(done_by.values())
    assert {language for language, _ in done_by.values()} == set(LANGUAGES), collections.Counter(done_by.values())


def test_workers_share_a_rate_limited_gateway_by_honouring_retry_info(pb, start_gateway, start_worker):
    """A tight rate limit makes the gateway answer RESOURCE_EXHAUSTED often (to polls, to streams'
    acknowledgements and openings, to the job's calls); the workers wait as RetryInfo says and
    still finish every job. Half of them poll, half stream."""
    gateway = start_gateway("--rate-limit-per-second", "20", "--rate-limit-burst", "4")
    with grpc.insecure_channel(gateway.address) as channel:
        emulator = Emulator(pb, channel)
        job_ids = [emulator.create_job(Outcome="succeed") for _ in range(9)]
        workers = [
            start_worker(
                language,
                f"{language}-{mode}-limited",
                GATEWAY_MODE=mode,
                GATEWAY_ADDRESS=gateway.address,
                MAX_IN_FLIGHT=2,
                POLL_INTERVAL=0.1,
            )  # fmt: skip
            for language, mode in alternating_modes(1).items()
        ]
        for worker in workers:  # (ready: its SIGTERM handler is in place)
            worker.wait_for(WORKER_READY)
        jobs = wait_until_all_final(emulator, pb, len(job_ids), workers)
    for worker in workers:
        assert worker.stop() == 0, worker.output()
    assert all((job.status, job.result_count) == (pb.jobworker.JOB_STATUS_SUCCEEDED, 1) for job in jobs), jobs
    throttled = sum(worker.output().count("RESOURCE_EXHAUSTED") for worker in workers)
    assert throttled > 0, "the rate limit never answered RESOURCE_EXHAUSTED: the test proves nothing"


def test_workers_ride_out_upstream_throttling_by_honouring_retry_info(pb, start_gateway, start_worker):
    """CodePipeline throttling 15% of the job-worker calls reaches the workers as UNAVAILABLE with
    RetryInfo (in stream mode, an acknowledgement's answer on the stream); they wait, retry, and
    every job still ends once, as it asked. Half of them poll, half stream."""
    # One attempt per call: the gateway's own retries would hide nearly all of the throttling.
    gateway = start_gateway("--faults", "*:throttling=0.15", "--aws-max-attempts", "1")
    with grpc.insecure_channel(gateway.address) as channel:
        emulator = Emulator(pb, channel)
        workers = [
            start_worker(
                language,
                f"{language}-{mode}-throttled",
                GATEWAY_MODE=mode,
                GATEWAY_ADDRESS=gateway.address,
                MAX_IN_FLIGHT=3,
                POLL_INTERVAL=0.2,
            )  # fmt: skip
            for language, mode in alternating_modes(0).items()
        ]
        for worker in workers:
            worker.wait_for(WORKER_READY)
        pool = create_pool(emulator, size=20)
        expected = len(pool) + sum(outcome == "continue" for outcome in pool.values())
        jobs = wait_until_all_final(emulator, pb, expected, workers)
        calls = emulator.call_counts()
    for worker in workers:
        assert worker.stop() == 0, worker.output()
    for job in jobs:
        assert (job.acknowledge_count, job.result_count) == (1, 1), job
        wanted = pb.jobworker.JOB_STATUS_FAILED if pool.get(job.job_id) == "fail" else pb.jobworker.JOB_STATUS_SUCCEEDED
        assert job.status == wanted, job
    retries = sum(worker.output().count("answered UNAVAILABLE; retrying") for worker in workers)
    assert retries > 0, "no call was throttled: the test proves nothing"
    # Every throttled result call was retried until one got through, and no more.
    results = calls["PutJobSuccessResult"] + calls["PutJobFailureResult"]
    assert results >= len(jobs), calls


def write_token_file(path: Path, clients: dict[str, str]) -> None:
    """The gateway's TOML token file: each client id with the SHA-256 of its token, every RPC allowed."""
    path.write_text(
        "".join(
            f'[[clients]]\nid = "{client_id}"\n'
            f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nallowed_rpcs = ["*"]\n\n'
            for client_id, token in clients.items()
        )
    )


def test_workers_send_their_bearer_token_to_a_gateway_that_requires_one(pb, tmp_path, start_gateway, start_worker):
    tokens = {name: f"{name}-secret-token-0123456789" for name in (*LANGUAGES, "admin")}
    write_token_file(tmp_path / "tokens.json", {f"{name}-client": token for name, token in tokens.items()})
    gateway = start_gateway("--token-file", str(tmp_path / "tokens.json"))

    # Without a token each worker is told UNAUTHENTICATED (a poll, or the stream's opening) and
    # exits non-zero: a configuration error.
    anonymous = [
        start_worker(language, f"{language}-{mode}-anonymous", GATEWAY_MODE=mode, GATEWAY_ADDRESS=gateway.address)
        for language in LANGUAGES
        for mode in MODES
    ]
    for worker in anonymous:
        assert worker.process.wait(timeout=20) != 0, worker.output()
        assert re.search("unauthenticated", worker.output(), re.IGNORECASE), worker.output()

    with grpc.insecure_channel(gateway.address) as plain:
        emulator = Emulator(pb, grpc.intercept_channel(plain, BearerToken(tokens["admin"])))
        job_ids = [emulator.create_job(Outcome="succeed") for _ in range(6)]
        workers = [
            start_worker(
                language,
                f"{language}-authed",
                GATEWAY_ADDRESS=gateway.address,
                GATEWAY_TOKEN=tokens[language],
                MAX_IN_FLIGHT=2,
                POLL_INTERVAL=0.2,
            )  # fmt: skip
            for language in LANGUAGES
        ]
        for worker in workers:  # (ready: its SIGTERM handler is in place)
            worker.wait_for(WORKER_READY)
            assert "streaming for" in worker.output(), "GATEWAY_MODE unset should mean stream"
        jobs = wait_until_all_final(emulator, pb, len(job_ids), workers)
    for worker in workers:
        assert worker.stop() == 0, worker.output()
    assert all(job.status == pb.jobworker.JOB_STATUS_SUCCEEDED for job in jobs), jobs


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_worker_repeats_a_lost_result_and_reads_invalid_job_state_as_delivered(
    language, pb, gateway, emulator, start_worker
):
    """The emulator applies PutJobSuccessResult and drops its answer (the gateway: UNAVAILABLE,
    indeterminate=true) until the worker says it repeats it; the repeat then answers
    FAILED_PRECONDITION InvalidJobStateException, which the worker reads as delivered: the job
    stays Succeeded, with one result, and the worker reports no failure for it."""
    emulator.set_faults("PutJobSuccessResult:drop=1")
    job_id = emulator.create_job(Outcome="succeed")
    worker = start_worker(
        language,
        f"{language}-lost-result",
        GATEWAY_MODE=alternating_modes(0)[language],
        GATEWAY_ADDRESS=gateway.address,
        POLL_INTERVAL=0.2,
    )  # fmt: skip
    worker.wait_for(re.compile(r"PutJobSuccessResult answered UNAVAILABLE; retrying"))
    emulator.set_faults("")
    worker.wait_for(re.compile(r"PutJobSuccessResult was delivered by an earlier attempt"))
    assert worker.stop() == 0, worker.output()

    job = emulator.job(job_id)
    assert job.status == pb.jobworker.JOB_STATUS_SUCCEEDED, worker.output()
    assert (job.acknowledge_count, job.result_count) == (1, 1), job
    calls = emulator.call_counts()
    assert calls.get("PutJobSuccessResult", 0) >= 2, calls
    assert calls.get("PutJobFailureResult", 0) == 0, (calls, worker.output())
