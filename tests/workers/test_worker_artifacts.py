"""The example workers read their jobs' input artifacts and write their output artifacts through
the gateway's ArtifactService, with no AWS SDK: every input downloaded and hashed, a manifest of
them written to every output of a job that succeeds, a job whose input is missing failed, a
transfer the store answers 503 retried after its RetryInfo, and with ARTIFACTS=off nothing read
or written. The emulator's admin service attaches the inputs and reads the outputs back as the
artifact store holds them."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import grpc
import pytest
from packaging.requirements import Requirement

from workers_support import EXAMPLES, LANGUAGES, NODE_MODULES, TOOLS, alternating_modes, wait_until

ALL_DONE_TIMEOUT_SECONDS = 60


def demo_zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.md", text)
    return buffer.getvalue()


def manifest(job_id: str, output: str, inputs: list[tuple[str, bytes]]) -> bytes:
    """What a worker writes to each output artifact (examples/workers/README.md)."""
    lines = [f"job {job_id}", f"output {output}"]
    lines += [f"input {name} {len(data)} {hashlib.sha256(data).hexdigest()}" for name, data in inputs]
    return "".join(f"{line}\n" for line in lines).encode()


def wait_until_final(pb, emulator, job_ids: list[str], worker, follow_ups: int = 0) -> dict:
    """Waits until the jobs (and `follow_ups` continuations of them) are final; job id -> state."""
    final = {pb.jobworker.JOB_STATUS_SUCCEEDED, pb.jobworker.JOB_STATUS_FAILED}

    def all_final():
        jobs = {job.job_id: job for job in emulator.jobs()}
        done = len(jobs) == len(job_ids) + follow_ups and all(job.status in final for job in jobs.values())
        return jobs if done else None

    return wait_until(
        all_final, ALL_DONE_TIMEOUT_SECONDS, f"{len(job_ids)} jobs to be final", explain=lambda: worker.output()
    )


def assert_nothing_written(emulator, job_id: str, name: str) -> None:
    with pytest.raises(grpc.RpcError) as nothing:
        emulator.read_output(job_id, name)
    assert nothing.value.code() == grpc.StatusCode.FAILED_PRECONDITION, nothing.value


def assert_output(emulator, job_id: str, name: str, expected: bytes) -> None:
    metadata, body = emulator.read_output(job_id, name)
    assert body.decode() == expected.decode()
    assert (metadata.size_bytes, metadata.content_type) == (len(expected), "text/plain")
    assert metadata.server_side_encryption == "aws:kms"
    assert metadata.sha256 == base64.b64encode(hashlib.sha256(expected).digest()).decode()


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_worker_reads_every_input_and_writes_a_manifest_of_them_to_every_output(
    language, pb, gateway, emulator, start_worker
):
    source = demo_zip("# demo-app\n\nThe demo pipeline's source.\n")
    libraries = os.urandom(3 * 1024 * 1024 + 7)  # many chunks on the way down
    built = emulator.create_artifact_job(["SourceOutput", "Libraries"], ["BuildOutput", "Report"], WorkMillis="50").job_id
    emulator.attach_input(built, "SourceOutput", source)
    emulator.attach_input(built, "Libraries", libraries, content_type="application/octet-stream")
    continued = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"], Outcome="continue").job_id
    emulator.attach_input(continued, "SourceOutput", source)
    failed = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"], Outcome="fail").job_id
    emulator.attach_input(failed, "SourceOutput", source)
    missing = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"]).job_id  # its input never written
    plain = emulator.create_job(Outcome="succeed")  # no artifacts at all
    job_ids = [built, continued, failed, missing, plain]

    worker = start_worker(
        language,
        f"{language}-artifacts",
        GATEWAY_MODE=alternating_modes(0)[language],
        GATEWAY_ADDRESS=gateway.address,
        MAX_IN_FLIGHT=2,
        POLL_INTERVAL=0.2,
    )  # fmt: skip
    jobs = wait_until_final(pb, emulator, job_ids, worker, follow_ups=1)
    assert worker.stop() == 0, worker.output()
    succeeded, job_failed = pb.jobworker.JOB_STATUS_SUCCEEDED, pb.jobworker.JOB_STATUS_FAILED

    # Every input read, a manifest of them in every output.
    assert jobs[built].status == succeeded, jobs[built]
    for output in ("BuildOutput", "Report"):
        assert_output(emulator, built, output, manifest(built, output, [("SourceOutput", source), ("Libraries", libraries)]))

    # A continued job writes its outputs in its follow-up (same locations), which names itself.
    follow_up = jobs[continued].continued_by_job_id
    assert (jobs[continued].status, jobs[follow_up].status) == (succeeded, succeeded)
    assert_output(emulator, follow_up, "BuildOutput", manifest(follow_up, "BuildOutput", [("SourceOutput", source)]))

    # A job that fails writes nothing; one whose input is missing fails, saying so.
    assert jobs[failed].status == job_failed and jobs[failed].failure_details.message == "failed as asked"
    assert_nothing_written(emulator, failed, "BuildOutput")
    refused = jobs[missing]
    assert refused.status == job_failed, refused
    assert refused.failure_details.type == pb.jobworker.FAILURE_TYPE_JOB_FAILED
    assert refused.failure_details.message.startswith("input artifact SourceOutput: NOT_FOUND "), refused
    assert refused.failure_details.external_execution_id == f"{language}-artifacts:{missing}"
    assert_nothing_written(emulator, missing, "BuildOutput")
    assert jobs[plain].status == succeeded

    # One HEAD per input read (the missing one's too), one PutObject per output written: nothing
    # was written by the jobs that failed or by the continued job's first half.
    calls = emulator.call_counts()
    assert calls["HeadObject"] == 2 + 1 + 1 + 1 + 1, calls  # built, continued and its follow-up, failed, missing
    assert calls["PutObject"] == 2 + 1, calls  # built's two, the follow-up's one
    assert f"read input artifact Libraries ({len(libraries)} bytes)" in worker.output()


@pytest.mark.parametrize("language", LANGUAGES)
def test_with_artifacts_off_a_worker_reads_and_writes_none(language, pb, gateway, emulator, start_worker):
    job_id = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"]).job_id  # its input never written
    worker = start_worker(
        language, f"{language}-no-artifacts", ARTIFACTS="off", GATEWAY_ADDRESS=gateway.address, POLL_INTERVAL=0.2
    )
    jobs = wait_until_final(pb, emulator, [job_id], worker)
    assert worker.stop() == 0, worker.output()

    assert jobs[job_id].status == pb.jobworker.JOB_STATUS_SUCCEEDED, jobs[job_id]
    assert_nothing_written(emulator, job_id, "BuildOutput")
    calls = emulator.call_counts()
    assert not {operation for operation, count in calls.items() if operation.endswith("Object") and count}, calls


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_worker_retries_a_transfer_the_store_answers_unavailable(language, pb, gateway, emulator, start_worker):
    """The store answers every HEAD 503 (the gateway: UNAVAILABLE with RetryInfo) until the worker
    says it retries its download; then every PutObject, until it says it retries its upload."""
    source = demo_zip("# retried\n")
    job_id = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"]).job_id
    emulator.attach_input(job_id, "SourceOutput", source)
    emulator.set_faults("HeadObject:http503=1")
    worker = start_worker(
        language,
        f"{language}-retrying",
        GATEWAY_MODE=alternating_modes(1)[language],
        GATEWAY_ADDRESS=gateway.address,
        POLL_INTERVAL=0.2,
    )  # fmt: skip

    worker.wait_for(re.compile(r"DownloadInputArtifact answered UNAVAILABLE; retrying"))
    emulator.set_faults("PutObject:http503=1")
    worker.wait_for(re.compile(r"UploadOutputArtifact answered UNAVAILABLE; retrying"))
    emulator.set_faults("")
    jobs = wait_until_final(pb, emulator, [job_id], worker)
    assert worker.stop() == 0, worker.output()

    assert jobs[job_id].status == pb.jobworker.JOB_STATUS_SUCCEEDED, worker.output()
    assert_output(emulator, job_id, "BuildOutput", manifest(job_id, "BuildOutput", [("SourceOutput", source)]))


def test_the_python_worker_does_a_third_party_jobs_artifacts_with_its_client_token(
    pb, gateway, emulator, start_worker
):
    source = demo_zip("# partner\n")
    created = emulator.create_artifact_job(["SourceOutput"], ["BuildOutput"], third_party=True, Outcome="succeed")
    emulator.attach_input(created.job_id, "SourceOutput", source)
    worker = start_worker(
        "python",
        "python-partner-artifacts",
        ACTION_OWNER="ThirdParty",
        ACTION_PROVIDER="DemoPartner",
        CLIENT_TOKEN=created.client_token,
        GATEWAY_ADDRESS=gateway.address,
        POLL_INTERVAL=0.2,
    )  # fmt: skip
    jobs = wait_until_final(pb, emulator, [created.job_id], worker)
    assert worker.stop() == 0, worker.output()

    assert jobs[created.job_id].status == pb.jobworker.JOB_STATUS_SUCCEEDED, worker.output()
    expected = manifest(created.job_id, "BuildOutput", [("SourceOutput", source)])
    assert_output(emulator, created.job_id, "BuildOutput", expected)
    assert created.client_token not in worker.output()


# What an AWS SDK (or an S3 client) is called in each ecosystem.
AWS_PYTHON = re.compile(r"^(boto3|botocore|aiobotocore|aioboto3|s3transfer|awscrt|aws[-_].*|minio)$", re.IGNORECASE)
AWS_GO = re.compile(r"^github\.com/(aws|minio)/")
AWS_NODE = re.compile(r"^(aws-sdk|@aws-sdk/.*|@aws-crypto/.*|@smithy/.*|minio)$")
AWS_JAVA = re.compile(r"(aws|awssdk|minio)", re.IGNORECASE)


def python_distributions(imports: set[str]) -> set[str]:
    """The installed distributions `imports` (top-level module names) come from, and everything
    they require, transitively (extras not taken)."""
    providers = importlib.metadata.packages_distributions()
    wanted = [dist for module in imports for dist in providers.get(module, [])]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return seen


def node_packages(package_json: Path) -> set[str]:
    """The packages of a package.json's dependencies, transitively, as installed in .tools/node."""
    wanted = [(name, NODE_MODULES) for name in json.loads(package_json.read_text()).get("dependencies", {})]
    seen: set[str] = set()
    while wanted:
        name, modules = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        # npm hoists: a package's own node_modules first, then the top level.
        installed = next(
            directory for directory in (modules / name, NODE_MODULES / name) if (directory / "package.json").is_file()
        )
        dependencies = json.loads((installed / "package.json").read_text()).get("dependencies", {})
        wanted += [(dependency, installed / "node_modules") for dependency in dependencies]
    return seen


def test_no_worker_depends_on_an_aws_sdk(worker_commands):
    # Python: what worker.py imports (OpenTelemetry included), and all that those require.
    tree = ast.parse((EXAMPLES / "python/worker.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "codepipeline"}  # (codepipeline: generated)
    python = python_distributions(third_party)
    assert {"grpcio", "grpcio-status", "protobuf"} <= python, python
    assert not {name for name in python if AWS_PYTHON.match(name)}, python

    # Go: every package the worker's build pulls in (GOPATH mode: there is no go.mod).
    gopath = Path(worker_commands["go"].argv[0]).parent / "gopath"
    listed = subprocess.run(
        ["go", "list", "-deps", "-f", "{{.ImportPath}}", str(EXAMPLES / "go/main.go")],
        capture_output=True,
        text=True,
        env={
            **os.environ, "GO111MODULE": "off", "GOFLAGS": "",
            "GOPATH": f"{gopath}:/usr/share/gocode", "GOCACHE": str(TOOLS / "go-cache"),
        },
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    go = set(listed.stdout.split())
    assert {"google.golang.org/grpc", "example.com/codepipeline-gateway/gen/jobworkerv1"} <= go, go
    assert not {path for path in go if AWS_GO.match(path)}, go

    # Node: package.json's dependencies, transitively; and worker.js requires nothing else.
    package_json = EXAMPLES / "node/package.json"
    node = node_packages(package_json)
    assert "@grpc/grpc-js" in node, node
    assert not {name for name in node if AWS_NODE.match(name)}, node
    required = set(re.findall(r"require\('([^']+)'\)", (EXAMPLES / "node/worker.js").read_text()))
    declared = set(json.loads(package_json.read_text())["dependencies"])
    assert {name for name in required if not name.startswith("node:")} <= declared, required

    # Java: the jars on the class path of the jar the build made (its manifest names them all).
    with zipfile.ZipFile(worker_commands["java"].argv[-1]) as jar:
        manifest_text = jar.read("META-INF/MANIFEST.MF").decode().replace("\r\n ", "").replace("\n ", "")
    [class_path] = [line.removeprefix("Class-Path: ") for line in manifest_text.splitlines() if line.startswith("Class-Path:")]
    jars = {Path(entry).name for entry in class_path.split()}
    assert {"grpc-api.jar", "protobuf.jar"} <= jars, jars
    assert not {name for name in jars if AWS_JAVA.search(name)}, jars
