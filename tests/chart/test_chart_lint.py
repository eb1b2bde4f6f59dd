"""`helm lint --strict` with Helm v4 (helm-python-sdk), and the chart's identity: its appVersion is
the gateway version in Cargo.toml, which the image tag defaults to."""

from __future__ import annotations

import re
import tarfile

import helm_python as helm
import pytest
from chart_support import (
    CHART_DIR,
    VALUE_SETS,
    cargo_version,
    chart_metadata,
    load_value_set,
    render,
)

# Helm reports these at INFO severity, which `--strict` (warnings are errors) lets pass. Any
# other finding fails the check.
ACCEPTED_INFO = {"icon is recommended"}
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint_findings(values: dict | None) -> list[str]:
    report = helm.lint(CHART_DIR, values, strict=True, namespace="ci", kube_version="v1.34.0")
    assert report["total_charts_linted"] == 1, report
    findings = [
        f"{SEVERITY.get(m['severity'], m['severity'])} {m['path']}: {m['error']}"
        for m in report["messages"]
        if not (m["severity"] <= 1 and m["error"] in ACCEPTED_INFO)
    ]
    return findings + [f"ERROR {e}" for e in report["errors"]]


def test_helm_is_v4() -> None:
    assert helm.helm_sdk_version().startswith("v4."), helm.helm_sdk_version()


def test_lint_strict_clean_with_defaults() -> None:
    assert lint_findings(None) == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict_clean_with_value_set(value_set: str) -> None:
    assert lint_findings(load_value_set(value_set)) == []


def test_lint_reports_values_the_schema_rejects() -> None:
    findings = lint_findings({"replicaCount": "two"})
    assert any("replicaCount" in finding for finding in findings), findings


def test_app_version_is_the_crate_version() -> None:
    metadata = chart_metadata()
    assert str(metadata["appVersion"]) == cargo_version()
    with helm.Chart.load(CHART_DIR) as chart:
        assert chart.metadata["appVersion"] == cargo_version()


def test_chart_metadata() -> None:
    metadata = chart_metadata()
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == CHART_DIR.name == "codepipeline-gateway"
    assert metadata["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(metadata["version"])), metadata["version"]
    # Native gRPC probes are GA from Kubernetes 1.27.
    assert metadata["kubeVersion"] == ">=1.27.0-0"


def test_package_holds_the_chart_and_not_the_readme_template(tmp_path) -> None:
    archive = helm.package(CHART_DIR, destination=tmp_path)
    assert archive.endswith(f"codepipeline-gateway-{chart_metadata()['version']}.tgz")
    with tarfile.open(archive) as packed:
        names = {name.removeprefix("codepipeline-gateway/") for name in packed.getnames()}
    assert {"Chart.yaml", "values.yaml", "values.schema.json", "README.md", "templates/NOTES.txt",
            "templates/tests/test-health.yaml", "dashboards/codepipeline-gateway.json"} <= names  # fmt: skip
    assert "README.tmpl.md" not in names


def test_image_tag_defaults_to_the_app_version() -> None:
    image = render().container["image"]
    assert image == f"codepipeline-gateway:{cargo_version()}"
    tagged = render({"image": {"repository": "r.example:5000/cpgw", "tag": "0.1.0-rc1"}})
    assert tagged.container["image"] == "r.example:5000/cpgw:0.1.0-rc1"


@pytest.mark.parametrize("tag", ["", "0.1.0-rc1"])
def test_image_digest_is_used_over_the_tag(tag: str) -> None:
    """With image.digest set the reference is repository@digest, with no tag in it, whether a
    tag is set or not: the digest alone decides what the nodes pull."""
    digest = "sha256:" + "ab" * 32
    pinned = render({"image": {"repository": "r.example:5000/cpgw", "tag": tag, "digest": digest}})
    assert pinned.container["image"] == f"r.example:5000/cpgw@{digest}"
    # The version label still names the release the chart deploys.
    assert pinned.deployment["metadata"]["labels"]["app.kubernetes.io/version"] == cargo_version()
