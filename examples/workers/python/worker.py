"""A CodePipeline custom-action job worker that speaks gRPC to codepipeline-gateway.

Polls for jobs with as many free slots as it has, acknowledges each (dropping it when another
worker holds it), reads its details, does the work its configuration asks for, and reports the
result. Settings come from the environment; see README.md. SIGTERM stops polling, lets the jobs
in hand finish, and exits 0.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codepipeline.jobworker.v1 import job_worker_pb2 as pb
from codepipeline.jobworker.v1 import job_worker_pb2_grpc as pb_grpc

# Worth retrying after a pause: the gateway or CodePipeline is throttling or briefly unreachable.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# A poll failing with these is a configuration problem that waiting does not fix.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
}
CALL_TIMEOUT_SECONDS = 20
JOB_RETRY_SECONDS = 120  # how long a job's call keeps retrying before the job is given up
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0

log = logging.getLogger("worker")


def retry_delay(err: grpc.RpcError) -> float | None:
    """The wait a google.rpc.RetryInfo in the status details asks for, if there is one."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        return None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


class Worker:
    def __init__(self) -> None:
        env = os.environ
        self.name = env.get("WORKER_NAME") or f"python-{socket.gethostname()}-{os.getpid()}"
        self.slots = int(env.get("MAX_IN_FLIGHT", "4"))
        self.poll_interval = float(env.get("POLL_INTERVAL", "5"))
        category = env.get("ACTION_CATEGORY", "Build").upper()
        self.action_type = pb.ActionTypeId(
            category=pb.ActionCategory.Value(
                category if category.startswith("ACTION_CATEGORY_") else f"ACTION_CATEGORY_{category}"
            ),
            owner=pb.ACTION_OWNER_CUSTOM,
            provider=env.get("ACTION_PROVIDER", "DemoBuilder"),
            version=env.get("ACTION_VERSION", "1"),
        )
        token = env.get("GATEWAY_TOKEN")
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        address = env.get("GATEWAY_ADDRESS", "localhost:50051")
        if ca_file := env.get("GATEWAY_TLS_CA"):
            with open(ca_file, "rb") as ca:
                credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.JobWorkerServiceStub(self.channel)
        self.stopping = threading.Event()
        self.in_flight = 0
        self.slot_freed = threading.Condition()

    def call(self, rpc: str, request, *, until_stopped: bool = False):
        """Calls a job-worker RPC, waiting and retrying while the answer is UNAVAILABLE or
        RESOURCE_EXHAUSTED: as long as RetryInfo says, else a jittered exponential backoff.
        A job's calls give up after JOB_RETRY_SECONDS; a poll retries until the worker stops."""
        backoff = FIRST_BACKOFF_SECONDS
        give_up_at = time.monotonic() + JOB_RETRY_SECONDS
        while True:
            try:
                return getattr(self.stub, rpc)(request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE:
                    raise
                wait = retry_delay(err)
                if wait is None:
                    wait = random.uniform(0, backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                log.info("%s: %s answered %s; retrying in %d ms", self.name, rpc, err.code().name, wait * 1000)
                if until_stopped:
                    if self.stopping.wait(wait):
                        raise
                elif time.monotonic() + wait > give_up_at:
                    raise
                else:
                    time.sleep(wait)

    def run(self) -> int:
        category = pb.ActionCategory.Name(self.action_type.category)
        log.info(
            "%s: polling for %s/%s/%s with %d slots",
            self.name, category, self.action_type.provider, self.action_type.version, self.slots,
        )  # fmt: skip
        with ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="job") as pool:
            while not self.stopping.is_set():
                with self.slot_freed:
                    if not self.slot_freed.wait_for(lambda: self.in_flight < self.slots, timeout=0.5):
                        continue  # all slots busy: look at `stopping` again, then wait on
                    free = self.slots - self.in_flight
                try:
                    request = pb.PollForJobsRequest(action_type_id=self.action_type, max_batch_size=free)
                    jobs = self.call("PollForJobs", request, until_stopped=True).jobs
                except grpc.RpcError as err:
                    if self.stopping.is_set():
                        break
                    if err.code() in FATAL:
                        log.error("%s: PollForJobs failed: %s %s", self.name, err.code().name, err.details())
                        return 1
                    log.warning("%s: PollForJobs failed: %s; polling again later", self.name, err.code().name)
                    jobs = []
                for job in jobs:
                    with self.slot_freed:
                        self.in_flight += 1
                    pool.submit(self.run_job, job)
                if not jobs:
                    self.stopping.wait(self.poll_interval * random.uniform(0.5, 1.5))
            log.info("%s: stopping; finishing %d job(s) in hand", self.name, self.in_flight)
        self.channel.close()
        log.info("%s: stopped", self.name)
        return 0

    def run_job(self, job: pb.Job) -> None:
        try:
            self.process(job)
        except Exception:
            log.exception("%s: job %s: gave up", self.name, job.id)
        finally:
            with self.slot_freed:
                self.in_flight -= 1
                self.slot_freed.notify()

    def process(self, job: pb.Job) -> None:
        try:
            self.call("AcknowledgeJob", pb.AcknowledgeJobRequest(job_id=job.id, nonce=job.nonce))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.ABORTED:
                log.info("%s: job %s is held by another worker; dropped", self.name, job.id)
                return
            raise
        details = self.call("GetJobDetails", pb.GetJobDetailsRequest(job_id=job.id)).job_details
        data = details.data
        configuration = data.action_configuration.configuration
        outcome = configuration.get("Outcome", "succeed")
        execution_id = f"{self.name}:{job.id}"

        # The "work": a pause as long as the job asks for.
        time.sleep(int(configuration.get("WorkMillis", "0")) / 1000)

        if outcome == "continue" and not data.HasField("continuation_token"):
            # Half done: CodePipeline creates a follow-up job carrying the token.
            details = pb.ExecutionDetails(
                summary="first half done", external_execution_id=execution_id, percent_complete=50
            )
            request = pb.PutJobSuccessResultRequest(
                job_id=job.id, continuation_token="continued", execution_details=details
            )
            self.call("PutJobSuccessResult", request)
            result = "continued"
        elif outcome in ("succeed", "continue"):
            details = pb.ExecutionDetails(summary="done", external_execution_id=execution_id, percent_complete=100)
            self.call("PutJobSuccessResult", pb.PutJobSuccessResultRequest(job_id=job.id, execution_details=details))
            result = "succeeded"
        else:
            failure = pb.FailureDetails(
                type=pb.FAILURE_TYPE_JOB_FAILED, message="failed as asked", external_execution_id=execution_id
            )
            if outcome != "fail":
                failure.type = pb.FAILURE_TYPE_CONFIGURATION_ERROR
                failure.message = f"Outcome={outcome} is not one of succeed, fail, continue"
            self.call("PutJobFailureResult", pb.PutJobFailureResultRequest(job_id=job.id, failure_details=failure))
            result = "failed"
        log.info("%s: reported %s %s", self.name, job.id, result)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    worker = Worker()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stopping.set())
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
