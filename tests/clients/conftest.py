"""Fixtures that run the real `codepipeline-gateway` binary and point real clients at it.

Every fixture starts a fresh process listening on port 0, waits for the line naming the
address it bound, and stops the process with SIGTERM when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support import (
    EMULATOR_ACCESS_KEY_ID,
    EMULATOR_READY,
    EMULATOR_REGION,
    EMULATOR_SECRET_ACCESS_KEY,
    GATEWAY_READY,
    PROTOCOL_IDS,
    PROTOCOLS,
    RunningBinary,
    codepipeline_client,
)


def emulator_args(*, demo_jobs: int = 3) -> tuple[str, ...]:
    return (
        "emulator",
        "--listen", "127.0.0.1:0",
        "--s3-listen", "127.0.0.1:0",
        "--demo-jobs", str(demo_jobs),
        "--access-key-id", EMULATOR_ACCESS_KEY_ID,
        "--secret-access-key", EMULATOR_SECRET_ACCESS_KEY,
        "--region", EMULATOR_REGION,
    )  # fmt: skip


EMULATOR_ARGS = emulator_args()

GATEWAY_ARGS = (
    "serve",
    "--listen", "127.0.0.1:0",
    "--metrics-listen", "127.0.0.1:0",
    "--upstream", "emulator",
    "--demo-jobs", "3",
)  # fmt: skip


@pytest.fixture
def launch() -> Iterator[Callable[..., RunningBinary]]:
    """Returns a function that starts the binary with some arguments and does not return before
    it prints a line matching `ready`. Whatever it started is stopped when the test ends."""
    started: list[RunningBinary] = []

    def start(*args: str, ready) -> RunningBinary:
        binary = RunningBinary(*args)
        started.append(binary)
        binary.wait_until_ready(ready)
        return binary

    yield start
    for binary in started:
        binary.stop()


@pytest.fixture
def emulator(launch) -> RunningBinary:
    """The emulator's AWS wire-protocol front with three demo jobs; `.address` is its URL."""
    return launch(*EMULATOR_ARGS, ready=EMULATOR_READY)


@pytest.fixture
def gateway(launch) -> RunningBinary:
    """The gRPC gateway on the in-process emulator with three demo jobs; `.address` is host:port."""
    return launch(*GATEWAY_ARGS, ready=GATEWAY_READY)


@pytest.fixture(params=PROTOCOLS, ids=PROTOCOL_IDS.get)
def protocol(request) -> str:
    """The wire protocol of the clients a test makes: every test asking for it (or for
    `codepipeline`) runs once in awsJson1_1 and once in Smithy RPC v2 CBOR."""
    return request.param


@pytest.fixture
def codepipeline(emulator, protocol):
    """A boto3 CodePipeline client signed with the emulator's credentials, speaking `protocol`."""
    return codepipeline_client(emulator.address, protocol=protocol)
