"""CPU a Python worker spends per AcknowledgeJob call: through the gateway with grpcio, against
calling the emulator's awsJson1_1 front with boto3 (what a Python team runs today). Measured with
time.process_time() in this process, after a warm-up; prints one JSON object.

Run by the benchmark harness (examples/bench); it passes the addresses and credentials.
"""

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import grpc
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEMO_ACTION_TYPE = {"category": "Build", "owner": "Custom", "provider": "DemoBuilder", "version": "1"}


def generated_stubs():
    """Compiles the job-worker proto with grpcio-tools into a temporary directory."""
    out = tempfile.mkdtemp(prefix="cpgw-stubs-")
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{ROOT / 'proto-deps'}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            "codepipeline/jobworker/v1/job_worker.proto",
        ],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, out)
    messages = importlib.import_module("codepipeline.jobworker.v1.job_worker_pb2")
    services = importlib.import_module("codepipeline.jobworker.v1.job_worker_pb2_grpc")
    return messages, services


def cpu_per_call(call, calls):
    for _ in range(max(10, calls // 10)):
        call()
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls


def grpcio_cost(args, pb, services):
    channel = grpc.insecure_channel(args.gateway)
    stub = services.JobWorkerServiceStub(channel)
    metadata = (("authorization", f"Bearer {args.token}"),)
    action_type = pb.ActionTypeId(
        category=pb.ACTION_CATEGORY_BUILD, owner=pb.ACTION_OWNER_CUSTOM,
        provider="DemoBuilder", version="1",
    )  # fmt: skip
    job = stub.PollForJobs(
        pb.PollForJobsRequest(action_type_id=action_type, max_batch_size=1), metadata=metadata
    ).jobs[0]
    request = pb.AcknowledgeJobRequest(job_id=job.id, nonce=job.nonce)
    stub.AcknowledgeJob(request, metadata=metadata)
    return cpu_per_call(lambda: stub.AcknowledgeJob(request, metadata=metadata), args.calls)


def boto3_cost(args):
    client = boto3.client(
        "codepipeline", endpoint_url=args.emulator, region_name="us-east-1",
        aws_access_key_id=args.access_key_id, aws_secret_access_key=args.secret_access_key,
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    job = client.poll_for_jobs(actionTypeId=DEMO_ACTION_TYPE, maxBatchSize=1)["jobs"][0]
    client.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    return cpu_per_call(lambda: client.acknowledge_job(jobId=job["id"], nonce=job["nonce"]), args.calls)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", required=True, help="host:port of the gateway")
    parser.add_argument("--token", required=True)
    parser.add_argument("--emulator", required=True, help="URL of the emulator's HTTP front")
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--secret-access-key", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    pb, services = generated_stubs()
    result = {
        "grpcio_cpu_us_per_call": grpcio_cost(args, pb, services) * 1e6,
        "boto3_cpu_us_per_call": boto3_cost(args) * 1e6,
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
