"""What the trace tests share besides fixtures: the tokens of the gateway's token file, and the
Python worker run by record_secrets.py."""

from __future__ import annotations

import json
from pathlib import Path

from workers_support import WorkerCommand, WorkerProcess

RECORD_SECRETS = Path(__file__).resolve().parent / "record_secrets.py"
WORKER_TOKEN = "python-worker-secret-token-0123456789"
ADMIN_TOKEN = "admin-secret-token-0123456789"
TOKENS = {"python-worker": WORKER_TOKEN, "admin": ADMIN_TOKEN}  # token-file client id -> token


class RecordedWorker(WorkerProcess):
    """The Python worker run by record_secrets.py: `.secrets()` is what the gateway handed it."""

    def __init__(self, command: WorkerCommand, name: str, secrets_file: Path, **settings: object) -> None:
        super().__init__(command, name, **settings)
        self.secrets_file = secrets_file

    def secrets(self) -> dict[str, list[str]]:
        """Field name (nonce, secret_access_key, session_token) -> the values the worker got."""
        return json.loads(self.secrets_file.read_text()) if self.secrets_file.exists() else {}
