"""Every value is documented (helm-docs style `# --` comments), the chart README is the one
scripts/chart-readme.py generates from them, and values.yaml and values.schema.json describe
the same keys."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import yaml
from chart_support import CHART_DIR, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
chart_readme = importlib.import_module("chart-readme")


def leaves(tree, path=""):
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{path}.{key}" if path else key)
    else:
        yield path


def test_every_value_is_documented() -> None:
    values_text = (CHART_DIR / "values.yaml").read_text()
    documented = {path for path, description in chart_readme.documented_keys(values_text) if description}
    undocumented = [
        leaf
        for leaf in leaves(yaml.safe_load(values_text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []


def test_readme_is_generated_from_values() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/chart-readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    readme = (CHART_DIR / "README.md").read_text()
    for path, _ in chart_readme.documented_keys((CHART_DIR / "values.yaml").read_text()):
        assert f"| `{path}` |" in readme


def test_values_and_schema_have_the_same_keys() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def compare(tree: dict, node: dict, path: str) -> None:
        properties = node.get("properties")
        if properties is None:
            return
        declared = set(properties) - {"global"}
        assert set(tree) == declared, f"{path or 'top level'}: values {sorted(tree)} vs schema {sorted(declared)}"
        for key, value in tree.items():
            if isinstance(value, dict):
                compare(value, properties[key], f"{path}.{key}" if path else key)

    compare(values, schema, "")


def test_readme_is_not_packaged_twice() -> None:
    assert "README.tmpl.md" in (CHART_DIR / ".helmignore").read_text().split()
