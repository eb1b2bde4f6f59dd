"""The job-worker proto is a contract: `buf lint` holds it to buf's STANDARD rules, and
`buf breaking` holds it to the last released version (proto-released/). The check is shown to
catch breaking edits, and to let compatible ones through, on copies in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from workers_support import BUF, REPO_ROOT

PROTO = REPO_ROOT / "proto"
RELEASED = REPO_ROOT / "proto-released"
JOB_WORKER = Path("codepipeline/jobworker/v1/job_worker.proto")


def buf(*args: object) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run scripts/install-test-tools.sh")
    return subprocess.run(
        [str(BUF), *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def breaking_against_release(proto_dir: Path | str) -> subprocess.CompletedProcess[str]:
    return buf("breaking", proto_dir, "--against", RELEASED.relative_to(REPO_ROOT), "--error-format", "text")


def test_buf_lint_is_clean_and_sees_only_the_served_protos():
    lint = buf("lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    files = buf("ls-files")
    assert files.returncode == 0, files.stderr
    assert sorted(files.stdout.split()) == [
        "proto-deps/google/rpc/error_details.proto",
        "proto-deps/google/rpc/status.proto",
        "proto/codepipeline/emulator/v1/emulator_admin.proto",
        "proto/codepipeline/jobworker/v1/job_worker.proto",
    ], "proto-released/ must stay out of the buf modules"


def test_the_released_contract_is_a_job_worker_proto_with_its_readme():
    assert (RELEASED / JOB_WORKER).is_file()
    assert (RELEASED / "README.md").is_file()
    assert sorted(path.relative_to(RELEASED) for path in RELEASED.rglob("*.proto")) == [JOB_WORKER]


def test_the_proto_has_no_breaking_change_since_the_release():
    result = breaking_against_release("proto")
    assert result.returncode == 0, f"breaking change against proto-released/:\n{result.stdout}{result.stderr}"


def edited_copy(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the buf workspace (buf.yaml, proto/ and proto-deps/, whose google.rpc protos
    job_worker.proto imports) with one edit to job_worker.proto; returns the copy's proto/."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "proto-deps", tmp_path / "proto-deps")
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy)
    path = copy / JOB_WORKER
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in job_worker.proto exactly once"
    path.write_text(text.replace(old, new))
    return copy


# AcknowledgeJobRequest.nonce and PollForJobsRequest.max_batch_size, told by the comment above each
# from the third-party messages' fields of the same name and number.
NONCE = "  // Required. The nonce that PollForJobs returned with the job; 1..50 characters.\n"
MAX_BATCH_SIZE = "  // The most jobs to return; at least 1 when set. Unset leaves the choice to CodePipeline.\n"

BREAKING_EDITS = {
    "field renamed": (
        NONCE + "  string nonce = 2;\n",
        NONCE + "  string job_nonce = 2;\n",
        'changed name from "nonce" to "job_nonce"',
    ),
    "field renumbered": (NONCE + "  string nonce = 2;\n", NONCE + "  string nonce = 3;\n", "deleted"),
    "field type changed": (
        MAX_BATCH_SIZE + "  optional int32 max_batch_size = 2;",
        MAX_BATCH_SIZE + "  optional int64 max_batch_size = 2;",
        'changed type from "int32" to "int64"',
    ),
    "rpc removed": (
        "  rpc GetJobDetails(GetJobDetailsRequest) returns (GetJobDetailsResponse);\n",
        "",
        'RPC "GetJobDetails"',
    ),
    "enum value removed": (
        "  FAILURE_TYPE_SYSTEM_UNAVAILABLE = 6;\n",
        "",
        'enum value "6" on enum "FailureType" was deleted',
    ),
}


@pytest.mark.parametrize(("old", "new", "reported"), BREAKING_EDITS.values(), ids=BREAKING_EDITS.keys())
def test_buf_breaking_catches_a_breaking_edit(tmp_path, old, new, reported):
    result = breaking_against_release(edited_copy(tmp_path, old, new))
    assert result.returncode != 0, f"buf breaking let a breaking edit through:\n{result.stdout}{result.stderr}"
    assert reported in result.stdout, result.stdout + result.stderr


def test_buf_breaking_lets_a_compatible_edit_through(tmp_path):
    copy = edited_copy(
        tmp_path,
        "  string nonce = 2;\n}",
        "  string nonce = 2;\n  // A new optional field.\n  optional string note = 3;\n}",
    )
    result = breaking_against_release(copy)
    assert result.returncode == 0, result.stdout + result.stderr
