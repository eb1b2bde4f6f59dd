"""The bad-input corpus runs against the real `codepipeline-gateway` binary: one gateway per test
module (on the embedded emulator, with a token file and a 64 KiB message limit), shared by the
module's cases. Every case checks, besides its own answer, that the emulator counted no job-worker
call and that the gateway still reports SERVING.

The binary and its launcher are tests/shared/gateway_process.py's.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from corpus_protos import emulator, health
from gateway_process import GATEWAY_READY, RunningBinary
from corpus_wire import EMULATOR_ADMIN, HEALTH_CHECK, MAX_MESSAGE_SIZE, Answer, grpc_call


class Gateway:
    """A running gateway and what the cases need of it."""

    def __init__(self, binary, tokens: dict[str, str]) -> None:
        self.binary = binary
        self.address = binary.address
        self.tokens = tokens
        self.channel = grpc.insecure_channel(self.address)

    def bearer(self, client: str) -> str:
        return f"Bearer {self.tokens[client]}"

    def call(self, path: str, request: bytes, *, client: str | None = "worker",
             metadata: tuple[tuple[str, str], ...] | None = None) -> Answer:
        """Calls `path` with `request` as the message, as `client` (None: no credentials), or
        with exactly `metadata` when given."""
        if metadata is None:
            metadata = (("authorization", self.bearer(client)),) if client else ()
        return grpc_call(self.channel, path, request, metadata)

    def call_counts(self) -> dict[str, int]:
        """The job-worker calls that reached the emulator, by operation."""
        answer = self.call(EMULATOR_ADMIN + "GetCallCounts",
                           emulator.GetCallCountsRequest().SerializeToString(), client="admin")
        assert answer.code == grpc.StatusCode.OK, f"GetCallCounts failed: {answer}\n{self.binary.output()}"
        return dict(emulator.GetCallCountsResponse.FromString(answer.body).calls)

    def assert_no_upstream_call_since(self, before: dict[str, int]) -> None:
        after = self.call_counts()
        assert after == before, f"the emulator was called: call counts went from {before} to {after}"

    def assert_serving(self) -> None:
        """The process is alive and grpc.health.v1 (no credentials) says SERVING."""
        assert self.binary.process.poll() is None, f"the gateway exited\n{self.binary.output()}"
        answer = grpc_call(self.channel, HEALTH_CHECK, health.check_request())
        assert answer.code == grpc.StatusCode.OK, f"health check failed: {answer}"
        assert health.status_of(answer.body) == health.SERVING, f"health is {answer.body!r}, not SERVING"

    def close(self) -> None:
        self.channel.close()


def _token_file(directory: Path, tokens: dict[str, str]) -> Path:
    allowed = {"worker": '["*"]', "admin": '["*"]', "ack_only": '["AcknowledgeJob"]', "other_team": '["*"]'}
    # Another team's client: allowed every RPC, scoped to an action type no corpus job has.
    scopes = {"other_team": 'action_types = ["Build/Custom/OtherBuilder/*"]\n'}
    entries = []
    for client, token in tokens.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        entries.append(
            f'[[clients]]\nid = "{client}"\ntoken_sha256 = "{digest}"\nallowed_rpcs = {allowed[client]}\n'
            + scopes.get(client, "")
        )
    path = directory / "tokens.toml"
    path.write_text("\n".join(entries))
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    """One gateway per test module: `--upstream emulator` with no demo jobs, a token file with a
    client allowed everything (`worker`), another for the admin calls (`admin`), one allowed
    only AcknowledgeJob (`ack_only`) and another team's (`other_team`, every RPC but scoped to
    another action type), and a 64 KiB message limit. Rate limits are raised out of
    the way: the corpus is about bad input, not rates. On teardown it must exit 0 on SIGTERM
    and must not have logged a panic."""
    tokens = {client: secrets.token_hex(32) for client in ("worker", "admin", "ack_only", "other_team")}
    token_file = _token_file(tmp_path_factory.mktemp("corpus"), tokens)
    binary = RunningBinary(
        "serve",
        "--upstream", "emulator",
        "--listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--demo-jobs", "0",
        "--token-file", str(token_file),
        "--max-message-size", str(MAX_MESSAGE_SIZE),
        "--rate-limit-per-second", "100000",
        "--rate-limit-burst", "100000",
    )  # fmt: skip
    try:
        binary.wait_until_ready(GATEWAY_READY)
        running = Gateway(binary, tokens)
        yield running
        running.close()
    finally:
        status = binary.stop()
    output = binary.output()
    assert "panicked" not in output, f"the gateway panicked during the corpus\n{output}"
    assert status == 0, f"the gateway exited with status {status} on SIGTERM\n{output}"
