"""How every Python suite starts the binary under test and reads what it says.

tests/conftest.py puts this directory on `sys.path` for every suite; the suites reach into this
directory only, never into one another.

The binary is GATEWAY_BIN, else $CARGO_TARGET_DIR/debug/codepipeline-gateway, else
target/debug/codepipeline-gateway.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools/bin"


def _default_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug/codepipeline-gateway"


GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN") or _default_binary())

READY_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10

# The lines the binary prints once each listener is bound, with the address it bound.
GATEWAY_READY = re.compile(r"grpc listening on (\S+)")
METRICS_READY = re.compile(r"metrics listening on (\S+)")
EMULATOR_READY = re.compile(r"emulator listening on (http://\S+)")

# The emulator's identity: the static credentials its fronts accept, its region and account.
EMULATOR_ACCESS_KEY_ID = "AKIDEMULATOR00000000"
EMULATOR_SECRET_ACCESS_KEY = "emulator-secret-access-key"
EMULATOR_REGION = "us-east-1"
EMULATOR_ACCOUNT_ID = "123456789012"

# The custom action type the emulator seeds, with `--demo-jobs N` Queued jobs.
DEMO_ACTION_TYPE = {"category": "Build", "owner": "Custom", "provider": "DemoBuilder", "version": "1"}
# The demo third-party action type and the client of its demo jobs (crates/emulator/src/engine/demo.rs).
DEMO_THIRD_PARTY_ACTION_TYPE = DEMO_ACTION_TYPE | {"owner": "ThirdParty", "provider": "DemoPartner"}
DEMO_CLIENT_ID = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"
DEMO_CLIENT_TOKEN = "demo-partner-client-token"


def require_binary(binary: Path = GATEWAY_BIN) -> None:
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: run `cargo build` first, or set GATEWAY_BIN")


class RunningBinary:
    """The binary under test, started with some arguments.

    A thread drains stdout (so the process never blocks on a full pipe) and stderr goes to a
    temporary file, so both can be shown when something goes wrong.
    """

    def __init__(
        self,
        *args: str,
        binary: Path = GATEWAY_BIN,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        require_binary(binary)
        self.args = [str(binary), *args]
        self.address = ""
        self._stdout_seen: list[str] = []
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile("w+", errors="replace")
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            errors="replace",
            cwd=cwd,
            env=None if env is None else dict(env),
        )
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout_lines.put(line.rstrip("\n"))
        self._stdout_lines.put(None)

    def first_match(self, ready: re.Pattern[str], timeout: float = READY_TIMEOUT_SECONDS) -> str | None:
        """Reads stdout up to the first line matching `ready` and returns its first group, or
        None if the process exited first. Fails the test, showing the output, if neither
        happens within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._stdout_lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.process.wait()
                return None
            self._stdout_seen.append(line)
            if match := ready.search(line):
                return match.group(1)
        pytest.fail(f"`{self}` did not print {ready.pattern!r} within {timeout} s\n{self.output()}")

    def wait_until_ready(self, ready: re.Pattern[str], timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """As [`first_match`], remembering the match as the address; an exit first fails the test."""
        address = self.first_match(ready, timeout)
        if address is None:
            pytest.fail(
                f"`{self}` exited with status {self.process.returncode} before printing "
                f"{ready.pattern!r}\n{self.output()}"
            )
        self.address = address
        return address

    def stop(self) -> int:
        """Sends SIGTERM and waits for the exit status; kills the process if it outlives
        STOP_TIMEOUT_SECONDS (and then fails the test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"`{self}` ignored SIGTERM for {STOP_TIMEOUT_SECONDS} s\n{self.output()}")
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, for a process whose graceful exit is not what the test is about."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """VmRSS of the process, from /proc/PID/status."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def output(self, stderr_tail: int | None = None) -> str:
        """What the process printed; with `stderr_tail`, only that many last characters of stderr."""
        self._stderr.seek(0)
        stderr = self._stderr.read()
        if stderr_tail is not None:
            stderr = stderr[-stderr_tail:]
        stdout = "\n".join(self._stdout_seen)
        return f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"

    def __str__(self) -> str:
        return " ".join(self.args)


def metrics_samples(address: str) -> dict[tuple[str, frozenset], float]:
    """The Prometheus text at http://ADDRESS/metrics as {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?", line)
        if match is None:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples
