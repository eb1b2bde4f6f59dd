"""An S3 nobody here wrote, for the gateway's artifact path: moto's server (`moto_server`, from
PyPI's `moto[server]`, pinned by scripts/install-test-tools.sh) on a free port, and a recorder
between the gateway and it that keeps what the gateway sent.

moto takes the gateway's checksums without checking them (and keeps a PutObject's only when the
request also names its algorithm in `x-amz-sdk-checksum-algorithm`), so the recorder is what lets a
test check each body against the `x-amz-checksum-sha256` sent with it. It forwards every request and
answer as they are: it reads, it never changes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import pytest

from support import REPO_ROOT

MOTO_SERVER = REPO_ROOT / ".tools/venv/bin/moto_server"
READY_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
# Hop-by-hop headers, and those the recorder's own HTTP server writes itself.
NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "server", "date"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer:
    """`moto_server` on 127.0.0.1 and a free port; `.url` once it answers."""

    def __init__(self) -> None:
        if not MOTO_SERVER.is_file():
            pytest.fail(f"{MOTO_SERVER} does not exist: run scripts/install-test-tools.sh")
        self._log = tempfile.TemporaryFile("w+", errors="replace")
        # moto_server cannot bind port 0 and say which port it got: pick one, and pick again if
        # someone else took it meanwhile.
        for _ in range(3):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.process = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_until_it_answers():
                return
        pytest.fail(f"moto_server did not start\n{self.output()}")

    def _wait_until_it_answers(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                # moto's own API, outside any AWS service: answers once the server is up.
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"moto_server did not answer within {READY_TIMEOUT_SECONDS} s\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def sha256_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass
class Recorded:
    """One request the gateway sent to S3, and the status of the answer."""

    method: str
    path: str  # the object's path, /bucket/key
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; no Authorization
    body: bytes
    status: int

    @property
    def operation(self) -> str:
        """The S3 operation, as the AWS SDKs name it in the `x-id` query parameter (and otherwise
        from the method and query)."""
        if "x-id" in self.query:
            return self.query["x-id"]
        if self.method == "HEAD":
            return "HeadObject"
        if self.method == "POST" and "uploads" in self.query:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in self.query:
            return "CompleteMultipartUpload"
        return f"{self.method} {self.path}"


@dataclass
class WireRecorder:
    """An HTTP/1.1 forwarder on a free port to `upstream`; keeps every request in `requests`."""

    upstream: str
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self
        target = urllib.parse.urlsplit(self.upstream)

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's client expects

            def forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {name: value for name, value in self.headers.items() if name.lower() not in NOT_FORWARDED}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                split = urllib.parse.urlsplit(self.path)
                recorder.requests.append(
                    Recorded(
                        method=self.command,
                        path=urllib.parse.unquote(split.path),
                        query=dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
                        headers={k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"},
                        body=body,
                        status=answer.status,
                    )
                )
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    # A HEAD answer's Content-Length is the object's: passed on as it is.
                    if name.lower() in NOT_FORWARDED or (name.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def of(self, *operations: str) -> list[Recorded]:
        """The requests of these S3 operations, in order."""
        return [request for request in self.requests if request.operation in operations]

    def clear(self) -> None:
        self.requests.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
