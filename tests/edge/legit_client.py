"""The legitimate client of the edge tests, run as its own process by edge_support.LegitClient:

    legit_client.py ADDRESS TOKEN ACKNOWLEDGE_JOB_REQUEST_HEX

A background thread calls Health Check and AcknowledgeJob (an unknown job: NOT_FOUND is the
served answer) one after the other on one grpcio channel until SIGTERM, and every call is
printed as a JSON line: rpc, started (CLOCK_MONOTONIC, shared with the parent), latency, ok,
detail. It runs in its own interpreter so that the attack threads of the test process, pure
Python that holds the GIL, cannot add their own waiting to its latencies: what it measures is
the gateway's doing. grpcio's transparent retries are off, so a refused stream cannot hide
behind a retry.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import grpc

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
ACKNOWLEDGE_JOB = "/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob"
CALL_TIMEOUT_SECONDS = 5.0
PAUSE_SECONDS = 0.01  # between rounds: ~50 rounds a second, a steady client, not a load test
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}


def main(address: str, token: str, acknowledge_job_request: bytes) -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    out = threading.Lock()
    channel = grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)])
    identity = {"request_serializer": lambda raw: raw, "response_deserializer": lambda raw: raw}
    health = channel.unary_unary(HEALTH_CHECK, **identity)
    acknowledge = channel.unary_unary(ACKNOWLEDGE_JOB, **identity)
    metadata = (("authorization", f"Bearer {token}"),)

    def check_health() -> str:
        answer = health(b"", timeout=CALL_TIMEOUT_SECONDS)
        return "" if answer == SERVING else f"health answered {answer!r}, not SERVING"

    def acknowledge_unknown_job() -> str:
        try:
            acknowledge(acknowledge_job_request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return ""
            raise
        return "AcknowledgeJob of an unknown job succeeded"

    def record(rpc: str, call) -> None:
        started = time.monotonic()
        try:
            detail = call()
        except grpc.RpcError as error:
            detail = f"{error.code()}: {error.details()}"
        except Exception as error:  # noqa: BLE001 - every failure of the client is recorded
            detail = repr(error)
        latency = time.monotonic() - started
        line = json.dumps({"rpc": rpc, "started": started, "latency": latency, "ok": detail == "", "detail": detail})
        with out:
            print(line, flush=True)

    def run() -> None:
        while not stopping.is_set():
            record("Health/Check", check_health)
            record("AcknowledgeJob", acknowledge_unknown_job)
            stopping.wait(PAUSE_SECONDS)

    worker = threading.Thread(target=run, name="legit-client")
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.1)
    channel.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]))
