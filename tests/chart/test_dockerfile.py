"""The Dockerfile (which cannot be built here: there is no Docker engine) agrees with the chart
and the crate: the binary's path and subcommand, the ports, a non-root distroless runtime, a
locked release build, and a Rust new enough for the crate's edition."""

from __future__ import annotations

import json
import re
import shlex
import tomllib

from chart_support import REPO_ROOT, render

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_multi_stage_locked_release_build() -> None:
    build, runtime = stages()
    assert build[0][1].startswith("rust:${RUST_VERSION}-bookworm AS build")
    (run,) = [rest for keyword, rest in build if keyword == "RUN"]
    assert "cargo build --release --locked" in run
    assert "protoc" not in DOCKERFILE.replace("no protoc", "")


def test_rust_version_builds_the_crate() -> None:
    (version,) = re.findall(r"^ARG RUST_VERSION=(\d+)\.(\d+)", DOCKERFILE, re.M)
    package = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]
    minimum = (1, 85) if package.get("edition") == "2024" else (1, 70)
    if "rust-version" in package:
        minimum = max(minimum, tuple(int(p) for p in package["rust-version"].split(".")[:2]))
    assert tuple(int(p) for p in version) >= minimum


def test_runtime_is_distroless_and_non_root() -> None:
    runtime = stages()[-1]
    assert runtime[0][1] == "gcr.io/distroless/cc-debian12:nonroot"
    (user,) = [rest for keyword, rest in runtime if keyword == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    pod_user = render().deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user == f"{pod_user}:{pod_user}"


def test_entrypoint_and_ports_match_the_chart() -> None:
    runtime = stages()[-1]
    (entrypoint,) = [json.loads(rest) for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    container = render().deployment["spec"]["template"]["spec"]["containers"][0]
    assert entrypoint == container["command"] + container["args"]
    (copy,) = [shlex.split(rest) for keyword, rest in runtime if keyword == "COPY"]
    assert copy[-1] == container["command"][0]
    (expose,) = [rest.split() for keyword, rest in runtime if keyword == "EXPOSE"]
    assert sorted(int(p) for p in expose) == sorted(p["containerPort"] for p in container["ports"])


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {"target", ".tools", ".git"} <= set(ignored)
    for needed in ("Cargo.toml", "Cargo.lock", "build.rs", "src", "proto", "proto-deps"):
        assert needed not in ignored
