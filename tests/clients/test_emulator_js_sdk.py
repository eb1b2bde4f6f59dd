"""The AWS SDK for JavaScript v3 against the emulator's AWS front, in both wire protocols.

The suite itself is a node:test file (js/emulator_sdk.test.js): the job-worker and third-party
lifecycles and every modelled error, checked by the SDK's own error classes and HTTP statuses.
Each test here starts an emulator, runs the file with Node against it in one protocol and reads
node's TAP summary. The SDK comes from .tools/js-clients (scripts/install-test-tools.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import emulator_args
from support import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_TOKEN,
    EMULATOR_ACCESS_KEY_ID,
    EMULATOR_ACCOUNT_ID,
    EMULATOR_READY,
    EMULATOR_REGION,
    EMULATOR_SECRET_ACCESS_KEY,
    PROTOCOL_IDS,
    REPO_ROOT,
)

SUITE = REPO_ROOT / "tests/clients/js/emulator_sdk.test.js"
JS_CLIENTS = REPO_ROOT / ".tools/js-clients/node_modules"
NODE_TIMEOUT_SECONDS = 120
# Enough demo jobs of each action type for every test of the suite on one emulator.
DEMO_JOBS = 12
# The suite's top-level tests; node counts each subtest too, so the summary holds more.
TOP_LEVEL_TESTS = len(re.findall(r"^test\(", SUITE.read_text(), flags=re.MULTILINE))


def tap_summary(output: str) -> dict[str, int]:
    """node's closing TAP comments (`# tests 40`, `# pass 40`, `# fail 0`, ...)."""
    return {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, flags=re.MULTILINE)}


def test_the_js_sdk_runs_the_job_lifecycles_and_meets_every_modelled_error(launch, protocol):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the JS SDK suite needs Node.js 20 or newer")
    if not (JS_CLIENTS / "@aws-sdk/client-codepipeline").is_dir():
        pytest.fail(f"{JS_CLIENTS} lacks the AWS SDK: run scripts/install-test-tools.sh")
    emulator = launch(*emulator_args(demo_jobs=DEMO_JOBS), ready=EMULATOR_READY)

    # A clean environment: no AWS_* settings of the caller reach the SDK.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "NODE_PATH": str(JS_CLIENTS),
        # The SDK warns that releases after January 2027 need Node 22; this machine has Node 20.
        "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED": "true",
        "EMULATOR_URL": emulator.address,
        "EMULATOR_PROTOCOL": PROTOCOL_IDS[protocol],
        "EMULATOR_REGION": EMULATOR_REGION,
        "EMULATOR_ACCOUNT_ID": EMULATOR_ACCOUNT_ID,
        "EMULATOR_ACCESS_KEY_ID": EMULATOR_ACCESS_KEY_ID,
        "EMULATOR_SECRET_ACCESS_KEY": EMULATOR_SECRET_ACCESS_KEY,
        "DEMO_CLIENT_ID": DEMO_CLIENT_ID,
        "DEMO_CLIENT_TOKEN": DEMO_CLIENT_TOKEN,
    }
    result = subprocess.run(
        [node, "--test-reporter=tap", str(SUITE)],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
    )
    output = f"--- node stdout ---\n{result.stdout}\n--- node stderr ---\n{result.stderr}"
    summary = tap_summary(result.stdout)
    assert result.returncode == 0, output
    assert summary.get("fail") == 0 and summary.get("cancelled") == 0, output
    assert summary.get("pass", 0) >= TOP_LEVEL_TESTS > 15, output
