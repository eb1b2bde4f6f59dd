"""What the client tests share: the binary under test, how to run it, the emulator's identity and
boto3 clients for it in either of CodePipeline's wire protocols.

The binary is `target/debug/codepipeline-gateway` unless `GATEWAY_BIN` names another one.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN", REPO_ROOT / "target/debug/codepipeline-gateway"))
TOOLS_BIN = REPO_ROOT / ".tools/bin"

READY_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10

EMULATOR_ACCESS_KEY_ID = "AKIDEMULATOR00000000"
EMULATOR_SECRET_ACCESS_KEY = "emulator-secret-access-key"
EMULATOR_REGION = "us-east-1"
EMULATOR_ACCOUNT_ID = "123456789012"

# The custom action type the emulator seeds, with `--demo-jobs N` Queued jobs.
DEMO_ACTION_TYPE = {"category": "Build", "owner": "Custom", "provider": "DemoBuilder", "version": "1"}
# The demo third-party action type and the client of its demo jobs (crates/emulator/src/engine.rs).
DEMO_THIRD_PARTY_ACTION_TYPE = DEMO_ACTION_TYPE | {"owner": "ThirdParty", "provider": "DemoPartner"}
DEMO_CLIENT_ID = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"
DEMO_CLIENT_TOKEN = "demo-partner-client-token"

# The wire protocols the emulator's front serves, as botocore's models name them: awsJson1_1
# (`POST /`, X-Amz-Target) and Smithy RPC v2 CBOR (`POST /service/<service>/operation/<op>`).
JSON = "json"
CBOR = "smithy-rpc-v2-cbor"
PROTOCOLS = (JSON, CBOR)
PROTOCOL_IDS = {JSON: "json", CBOR: "cbor"}
# The path prefix of every rpcv2Cbor request to CodePipeline.
CBOR_PATH_PREFIX = "/service/CodePipeline_20150709/operation/"

EMULATOR_READY = re.compile(r"emulator listening on (http://\S+)")
GATEWAY_READY = re.compile(r"grpc listening on (\S+)")


class RunningBinary:
    """The binary under test, started with some arguments.

    A thread drains stdout (so the process never blocks on a full pipe) and stderr goes to a
    temporary file, so both can be shown when something goes wrong.
    """

    def __init__(self, *args: str) -> None:
        if not GATEWAY_BIN.is_file():
            pytest.fail(f"{GATEWAY_BIN} does not exist: run `cargo build` first, or set GATEWAY_BIN")
        self.address = ""
        self._stdout_seen: list[str] = []
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile("w+", errors="replace")
        self.process = subprocess.Popen(
            [str(GATEWAY_BIN), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            errors="replace",
            cwd=REPO_ROOT,
        )
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout_lines.put(line.rstrip("\n"))
        self._stdout_lines.put(None)

    def wait_until_ready(self, ready: re.Pattern[str], timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """Reads stdout up to the first line matching `ready` and remembers its first group as
        the address. Fails the test, showing the output, if the process exits or the line does
        not come within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._stdout_lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.process.wait()
                pytest.fail(
                    f"`{self}` exited with status {self.process.returncode} before printing "
                    f"{ready.pattern!r}\n{self.output()}"
                )
            self._stdout_seen.append(line)
            if match := ready.search(line):
                self.address = match.group(1)
                return self.address
        pytest.fail(f"`{self}` did not print {ready.pattern!r} within {timeout} s\n{self.output()}")

    def stop(self) -> int:
        """Sends SIGTERM and waits for the exit status; kills the process if it outlives
        STOP_TIMEOUT_SECONDS (and then fails the test)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"`{self}` ignored SIGTERM for {STOP_TIMEOUT_SECONDS} s\n{self.output()}")
        return self.process.returncode

    def output(self) -> str:
        self._stderr.seek(0)
        stdout = "\n".join(self._stdout_seen)
        return f"--- stdout ---\n{stdout}\n--- stderr ---\n{self._stderr.read()}"

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.process.args)


@functools.cache
def data_path_speaking_only(protocol: str) -> Path:
    """A botocore data directory holding a copy of the installed botocore's own CodePipeline
    model that lists `protocol` as its only protocol.

    botocore picks a service's protocol from the model's `protocols` by a priority of its own,
    which still prefers awsJson1_1 for CodePipeline (whose model lists rpcv2Cbor first since
    botocore 1.44.1). A model naming one protocol leaves it no choice. Made once per test run,
    from the installed model, so no network is needed; removed when the run ends."""
    loader = botocore.loaders.create_loader()
    (api_version,) = loader.list_api_versions("codepipeline", "service-2")
    model = loader.load_service_model("codepipeline", "service-2", api_version)
    available = model["metadata"].get("protocols", [model["metadata"]["protocol"]])
    if protocol not in available:
        pytest.fail(
            f"botocore {botocore.__version__}'s CodePipeline model offers {available}, not {protocol}: "
            "run scripts/install-test-tools.sh"
        )
    model["metadata"] |= {"protocol": protocol, "protocols": [protocol]}
    directory = tempfile.TemporaryDirectory(prefix=f"botocore-codepipeline-{PROTOCOL_IDS[protocol]}-")
    atexit.register(directory.cleanup)
    target = Path(directory.name, "codepipeline", api_version, "service-2.json")
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(model))
    return Path(directory.name)


def codepipeline_client(
    endpoint_url: str,
    *,
    protocol: str = JSON,
    access_key_id: str = EMULATOR_ACCESS_KEY_ID,
    secret_access_key: str = EMULATOR_SECRET_ACCESS_KEY,
    session_token: str | None = None,
    **config: object,
):
    """A boto3 CodePipeline client for the emulator: its static credentials, no retries, and
    `protocol` on the wire (JSON or CBOR). Extra keyword arguments go to botocore's Config
    (e.g. signature_version=UNSIGNED)."""
    botocore_session = botocore.session.get_session()
    if protocol != JSON:
        botocore_session.get_component("data_loader").search_paths.insert(0, str(data_path_speaking_only(protocol)))
    client = boto3.session.Session(botocore_session=botocore_session).client(
        "codepipeline",
        endpoint_url=endpoint_url,
        region_name=EMULATOR_REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )
    assert client.meta.service_model.resolved_protocol == protocol, client.meta.service_model.metadata
    return client
