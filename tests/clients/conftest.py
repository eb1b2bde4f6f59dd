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
    RunningBinary,
    codepipeline_client,
)

EMULATOR_ARGS = (
    "emulator",
    "--listen", "127.0.0.1:0",
    "--demo-jobs", "3",
    "--access-key-id", EMULATOR_ACCESS_KEY_ID,
    "--secret-access-key", EMULATOR_SECRET_ACCESS_KEY,
    "--region", EMULATOR_REGION,
)  # fmt: skip

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


@pytest.fixture
def codepipeline(emulator):
    """A boto3 CodePipeline client signed with the emulator's credentials."""
    return codepipeline_client(emulator.address)
