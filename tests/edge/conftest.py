"""Fixtures of the edge suite: the job-worker messages checked against proto/, the token file of the two clients
("attacker" and "legit"), a launcher for the gateway binary with the flags a test needs, and the
watch that runs the legitimate client and samples RSS throughout an attack."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_support import (
    REPO_ROOT,
    UNKNOWN_JOB_ID,
    Gateway,
    Watch,
    acknowledge_job_message,
    grpc_frame,
    merge_flags,
    poll_for_jobs_message,
    token_file_text,
)

# Short timers so each test runs in seconds: the defaults (10 s handshake, 2 min idle, 20 s
# deadline) scaled down; a test that needs another value passes its own flag after these.
FAST_TIMERS = (
    "--handshake-timeout", "1s",
    "--idle-timeout", "3s",
    "--default-deadline", "2s",
)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def schema(tmp_path_factory) -> SimpleNamespace:
    """The job-worker request messages, built from proto/ with grpcio-tools: the proto is
    compiled to a descriptor set (imports included, so no generated module of google.rpc has to
    be importable) and the messages are made from it. The raw connections send hand-encoded
    bytes (edge_support); this checks once that they are exactly what the schema encodes, so
    the suite cannot drift from the proto unnoticed."""
    out = tmp_path_factory.mktemp("edge-schema") / "job_worker.pb"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{REPO_ROOT / 'proto'}", f"-I{REPO_ROOT / 'proto-deps'}",
            "--include_imports", f"--descriptor_set_out={out}",
            "codepipeline/jobworker/v1/job_worker.proto",
        ],
        check=True,
    )  # fmt: skip
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)

    def message(name: str):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"codepipeline.jobworker.v1.{name}"))

    acknowledge = message("AcknowledgeJobRequest")(job_id=UNKNOWN_JOB_ID, nonce="1").SerializeToString()
    poll_type = message("PollForJobsRequest")
    poll = poll_type(max_batch_size=1)
    poll.action_type_id.category = pool.FindEnumTypeByName("codepipeline.jobworker.v1.ActionCategory").values_by_name["ACTION_CATEGORY_BUILD"].number
    poll.action_type_id.owner = pool.FindEnumTypeByName("codepipeline.jobworker.v1.ActionOwner").values_by_name["ACTION_OWNER_CUSTOM"].number
    poll.action_type_id.provider = "DemoBuilder"
    poll.action_type_id.version = "1"
    assert grpc_frame(acknowledge) == acknowledge_job_message(), "the hand-encoded AcknowledgeJobRequest differs from proto/"
    assert grpc_frame(poll.SerializeToString()) == poll_for_jobs_message(), "the hand-encoded PollForJobsRequest differs from proto/"
    return SimpleNamespace(acknowledge_job_request=acknowledge, poll_for_jobs_request=poll.SerializeToString())


@pytest.fixture(scope="session")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edge-tokens") / "tokens.toml"
    path.write_text(token_file_text())
    return path


@pytest.fixture
def start_gateway(token_file) -> Iterator[Callable[..., Gateway]]:
    """start_gateway(*flags): the gateway on the emulator with FAST_TIMERS and `flags` (pairs of
    flag and value); stopped
    with SIGTERM when the test ends. Its stderr is shown if the test fails."""
    started: list[Gateway] = []

    def start(*flags: str) -> Gateway:
        gateway = Gateway(token_file, *merge_flags(FAST_TIMERS, flags))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def watch(schema) -> Iterator[Callable[[Gateway], Watch]]:
    """watch(gateway): starts the legitimate client on `gateway`, measures its baseline and the
    idle RSS; the test calls .check() after its attack."""
    watches: list[Watch] = []

    def begin(gateway: Gateway) -> Watch:
        w = Watch(gateway, schema.acknowledge_job_request)
        watches.append(w)
        w.start()
        return w

    yield begin
    for w in watches:
        w.abort()
