"""The Grafana dashboard the chart ships (dashboards/codepipeline-gateway.json, rendered into a
ConfigMap for the Grafana sidecar by `dashboards.enabled`).

- Its shape: rows of panels on Grafana's 24-column grid, unique ids, every query on the
  `$datasource` variable and filtered by the `$namespace`, `$job` and `$pod` variables.
- The ConfigMap: off by default; the sidecar's label, the annotations and the namespace as set;
  the data the file itself.
- Against a live gateway: the `dashboards` value set's container is started from the chart, a few
  calls are made (accepted, refused by authentication, by permission, by both rate limits,
  third-party ones the gateway supplies the client token for), and /metrics is scraped. Every
  metric that any panel's PromQL (or a variable's query) names must be on that page, with every
  label the query matches on or groups by, `rate()` must be over counters and
  `histogram_quantile()` over histogram buckets. The queries are read with a small PromQL reader
  (below), not a list kept by hand: a panel added for a new metric is checked as soon as it is in
  the JSON. A metric that only appears once some call has been made needs that call in
  `drive_calls`.
- Every metric in the Observability page's table (docs/observability.md) has a panel.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chart_support import (
    CHART_DIR,
    DEMO_POLL,
    FULLNAME,
    NAMESPACE,
    POLL_METHOD,
    REPO_ROOT,
    Gateway,
    load_value_set,
    render,
    render_value_set,
    start_serving,
)

DASHBOARD_FILE = CHART_DIR / "dashboards" / "codepipeline-gateway.json"
DASHBOARD_KEY = "codepipeline-gateway.json"
CONFIG_MAP = f"{FULLNAME}-dashboards"
VALUE_SET = "dashboards"

# Labels every series gets from the scrape rather than from /metrics: job and instance from
# Prometheus, namespace, pod, service, container and endpoint from the Prometheus Operator for a
# ServiceMonitor target (the chart's serviceMonitor).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# The dashboard's own filter, which every selector of every panel carries.
FILTER = {"namespace": ("=~", "$namespace"), "job": ("=~", "$job"), "pod": ("=~", "$pod")}

# The tokens of the `dashboards` value set (see its header comment).
WORKERS_TOKEN = "workers-token"
PACED_TOKEN = "paced-token"
PARTNER_WORKERS_TOKEN = "partner-workers-token"
JOB_WORKER = "codepipeline.jobworker.v1.JobWorkerService"
THIRD_PARTY = "codepipeline.jobworker.v1.ThirdPartyJobWorkerService"
# The emulator's demo third-party action type, whose jobs are for the demo client of conftest.py.
DEMO_PARTNER_POLL = {
    "actionTypeId": {
        "category": "ACTION_CATEGORY_BUILD",
        "owner": "ACTION_OWNER_THIRD_PARTY",
        "provider": "DemoPartner",
        "version": "1",
    },
    "maxBatchSize": 1,
}


# A PromQL reader: enough of the language to find the metrics, labels and functions a query
# names. It tokenizes the expression, skips strings, numbers, durations, range and subquery
# brackets and Grafana variables, reads label matchers and grouping clauses, and tracks which
# function or aggregation each selector sits in.

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}  # fmt: skip
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "double_exponential_smoothing",
    "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
    "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase",
    "info", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
    "start", "end",  # of the @ modifier
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
# Functions whose argument must be a counter (or a histogram's _bucket, _sum, _count).
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}

TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.X,
)


@dataclass(frozen=True)
class Selector:
    """A vector selector: its metric, its label matchers (label, op, value) and the functions and
    aggregations it is an argument of, outermost first."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()
    within: tuple[str, ...] = ()


@dataclass
class Query:
    expr: str
    selectors: list[Selector] = field(default_factory=list)
    # Labels of by / without / on / ignoring / group_left / group_right clauses.
    grouping: set[str] = field(default_factory=set)
    # Grafana variables used ($name, ${name}, ${name:format}, [[name]]).
    variables: set[str] = field(default_factory=set)
    # What range and subquery brackets hold: `5m`, `$__rate_interval`, `1h:1m`.
    windows: list[str] = field(default_factory=list)


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {position}: {expr[position:position + 20]!r} in {expr!r}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
        position = match.end()
    return tokens


def unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)[^}]*\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)[^\]]*\]\]")


def variables_in(text: str) -> set[str]:
    """Grafana variables in a token: $name, ${name}, ${name:format}, [[name]] (not `$1`)."""
    return {next(group for group in match.groups() if group) for match in VARIABLE.finditer(text)}


def parse_promql(expr: str) -> Query:
    tokens = tokenize(expr)
    query = Query(expr)
    query.variables = set().union(*(variables_in(t) for k, t in tokens if k in ("variable", "string")))
    stack: list[str | None] = []  # per open parenthesis: the function or aggregation it calls
    pending: str | None = None  # a function or aggregation whose parenthesis is next
    i = 0

    def text(at: int) -> str | None:
        return tokens[at][1] if at < len(tokens) else None

    def read_matchers(at: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
        matchers = []
        while text(at) != "}":
            if at + 2 >= len(tokens):
                raise ValueError(f"unterminated label matchers in {expr!r}")
            (label_kind, label), (_, op), (value_kind, value) = tokens[at : at + 3]
            if label_kind not in ("name", "string") or op not in ("=", "!=", "=~", "!~") or value_kind != "string":
                raise ValueError(f"cannot read the label matcher {label}{op}{value} in {expr!r}")
            matchers.append((label if label_kind == "name" else unquote(label), op, unquote(value)))
            at += 3
            if text(at) == ",":
                at += 1
        return tuple(matchers), at + 1

    def read_labels(at: int) -> tuple[set[str], int]:
        labels = set()
        while text(at) != ")":
            kind, label = tokens[at] if at < len(tokens) else ("", "")
            if kind not in ("name", "string") and label != ",":
                raise ValueError(f"cannot read the label list at {label!r} in {expr!r}")
            if label != ",":
                labels.add(label if kind == "name" else unquote(label))
            at += 1
        return labels, at + 1

    while i < len(tokens):
        kind, token = tokens[i]
        following = text(i + 1)
        if kind == "name":
            word = token.lower()
            if word in GROUPING:
                if following == "(":
                    labels, i = read_labels(i + 2)
                    query.grouping |= labels
                    continue
                if word not in ("group_left", "group_right"):
                    raise ValueError(f"`{token}` without a label list in {expr!r}")
            elif word in AGGREGATIONS or token in FUNCTIONS:
                if following != "(" and (following or "").lower() not in ("by", "without"):
                    raise ValueError(f"`{token}` is not called in {expr!r}")
                pending = word if word in AGGREGATIONS else token
            elif word in KEYWORDS:
                pass
            elif following == "(":
                raise ValueError(f"unknown PromQL function {token}() in {expr!r}")
            else:
                matchers: tuple[tuple[str, str, str], ...] = ()
                if following == "{":
                    matchers, i = read_matchers(i + 2)
                else:
                    i += 1
                query.selectors.append(Selector(token, matchers, tuple(f for f in stack if f)))
                continue
        elif token == "{":  # a selector without a metric name outside braces: {__name__="..."}
            matchers, i = read_matchers(i + 1)
            names = [value for label, op, value in matchers if label == "__name__" and op == "="]
            if len(names) != 1:
                raise ValueError(f"a selector without one metric name in {expr!r}")
            rest = tuple(m for m in matchers if m[0] != "__name__")
            query.selectors.append(Selector(names[0], rest, tuple(f for f in stack if f)))
            continue
        elif token == "[":  # a range or a subquery: durations and variables only
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j][1] == "]"), None)
            if end is None:
                raise ValueError(f"unterminated range in {expr!r}")
            query.windows.append("".join(t for _, t in tokens[i + 1 : end]))
            i = end + 1
            continue
        elif token == "(":
            stack.append(pending)
            pending = None
        elif token == ")":
            if not stack:
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            stack.pop()
        i += 1
    if stack:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return query


LABEL_VALUES = re.compile(r"\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>[A-Za-z_]\w*)\s*\)\s*", re.S)
QUERY_RESULT = re.compile(r"\s*query_result\((?P<expr>.+)\)\s*", re.S)


def parse_variable_query(text: str) -> tuple[Query, str | None]:
    """A Prometheus variable query: label_values([selector,] label), query_result(expr), or plain
    PromQL. Returns the PromQL part and the label whose values it lists."""
    if match := LABEL_VALUES.fullmatch(text):
        return parse_promql(match["selector"] or ""), match["label"]
    if match := QUERY_RESULT.fullmatch(text):
        return parse_promql(match["expr"]), None
    if re.match(r"\s*(metrics|label_names)\(", text):
        raise ValueError(f"variable query {text!r}: list label values or query results instead")
    return parse_promql(text), None


# The dashboard.


def load_dashboard(text: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        assert not duplicated, f"the dashboard repeats the keys {duplicated} (the last one would win)"
        return dict(pairs)

    return json.loads(text, object_pairs_hook=no_duplicates)


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every panel."""
    queries = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} query {target.get('refId')}"
            queries.append((where, target.get("expr", "")))
    return queries


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append((f"variable ${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return queries


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="module")
def queries(dashboard) -> list[tuple[str, Query]]:
    """Every panel's queries and every variable's, read."""
    read = [(where, parse_promql(expr)) for where, expr in panel_queries(dashboard)]
    read += [(where, parse_variable_query(text)[0]) for where, text in variable_queries(dashboard)]
    return read


# The reader itself.


@pytest.mark.parametrize(
    ("expr", "metrics", "grouping"),
    [
        ("up", ["up"], set()),
        (
            'sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{job=~"$job", grpc_type="unary"}'
            "[$__rate_interval]))",
            ["grpc_server_handling_seconds_bucket"],
            {"le", "grpc_method"},
        ),
        (
            "histogram_quantile(0.99, sum(rate(a_bucket[5m])) by (le)) > bool 0.5",
            ["a_bucket"],
            {"le"},
        ),
        (
            'sum without (instance) (rate(a_total{x!~"y|z"}[1h30m:1m] offset 5m)) / ignoring (code) group_left b',
            ["a_total", "b"],
            {"instance", "code"},
        ),
        ('count(gauge{l="rate(x)"} == 0) or vector(0)', ["gauge"], set()),
        (
            '{__name__="some_metric", a="b"} * on (a) group_right (c) other @ start()',
            ["some_metric", "other"],
            {"a", "c"},
        ),
        ('label_replace(m, "dst", "$1", "src", "(.*)") and SUM BY (dst) (n{a=`raw\\`}) # comment', ["m", "n"], {"dst"}),
        ("max(x:recorded:rate5m) - 1e3 + 0x1f + .5 + inf", ["x:recorded:rate5m"], set()),
    ],
)
def test_the_promql_reader_finds_metrics_and_labels(expr: str, metrics: list[str], grouping: set[str]) -> None:
    query = parse_promql(expr)
    assert [selector.metric for selector in query.selectors] == metrics
    assert query.grouping == grouping


def test_the_promql_reader_knows_where_each_selector_sits() -> None:
    query = parse_promql('histogram_quantile(0.9, sum by (le) (rate(h_bucket{a="b"}[5m]))) / scalar(g)')
    bucket, gauge = query.selectors
    assert bucket == Selector("h_bucket", (("a", "=", "b"),), ("histogram_quantile", "sum", "rate"))
    assert gauge.within == ("scalar",)
    assert query.variables == set()
    assert query.windows == ["5m"]
    assert parse_promql('rate(a{b=~"[.]x"}[1h:5m] offset 1d)').windows == ["1h:5m"]
    assert parse_promql('label_replace(m, "dst", "$1", "src", "(.*)")').variables == set()
    assert parse_promql('rate(x{a=~"$a"}[$__rate_interval]) * ${b:csv} + [[c]]').variables == {
        "a", "__rate_interval", "b", "c",
    }  # fmt: skip


@pytest.mark.parametrize(
    "expr",
    ["sum(rate(x[5m])", "rate(x[5m]))", "histogram_quantille(0.9, x)", "x{a=}", "sum by le (x)", "rate", "x ? y"],
)
def test_the_promql_reader_rejects_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(ValueError):
        parse_promql(expr)


def test_variable_queries_are_read() -> None:
    query, label = parse_variable_query('label_values(m{namespace=~"$namespace"}, job)')
    assert ([s.metric for s in query.selectors], label) == (["m"], "job")
    query, label = parse_variable_query("label_values(pod)")
    assert (query.selectors, label) == ([], "pod")
    query, label = parse_variable_query("query_result(topk(5, rate(m_total[5m])))")
    assert ([s.metric for s in query.selectors], label) == (["m_total"], None)


# The dashboard's shape.


def test_dashboard_identity(dashboard) -> None:
    assert dashboard["uid"] == "codepipeline-gateway" and len(dashboard["uid"]) <= 40
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard must not carry a database id"
    assert "__inputs" not in dashboard, "the sidecar does not fill import inputs: use the $datasource variable"


def test_variables(dashboard) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables)[:4] == ["datasource", "namespace", "job", "pod"]
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("namespace", "job", "pod"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        query, label = parse_variable_query(variable["query"])
        assert label == name, f"${name} lists the values of {label}"
        assert variable["includeAll"] and variable["multi"]
        # All matches a series without that label too (a scrape config with no pod label).
        assert variable["allValue"] == ".*"
    # Each variable narrows by the ones before it.
    _, job = variable_queries(dashboard)[1]
    _, pod = variable_queries(dashboard)[2]
    assert {m[0] for m in parse_variable_query(job)[0].selectors[0].matchers} == {"namespace"}
    assert {m[0] for m in parse_variable_query(pod)[0].selectors[0].matchers} == {"namespace", "job"}


def test_panels_sit_in_rows_on_the_grid(dashboard) -> None:
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in all_panels(panels)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    assert panels[0]["type"] == "row", "the first panel must be a row: every panel belongs to one"
    rows = [panel for panel in panels if panel["type"] == "row"]
    assert len(rows) >= 5
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert (grid["x"], grid["w"], grid["h"]) == (0, 24, 1), panel["title"]
            assert panel["collapsed"] or panel.get("panels", []) == [], "an open row holds no panels itself"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]
    # Listed top to bottom, so the panels of a row are those between it and the next row.
    tops = [panel["gridPos"]["y"] for panel in panels]
    assert tops == sorted(tops), "panels are listed top to bottom"


def test_every_panel_queries_the_datasource_variable(dashboard) -> None:
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel.get("description"), f"{title!r} has no description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        targets = panel.get("targets", [])
        assert targets, f"{title!r} has no query"
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in targets:
            assert target.get("expr", "").strip(), f"{title!r} query {target['refId']} has no expr"
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title


def test_every_panel_query_is_filtered_by_the_variables(dashboard) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    for where, expr in panel_queries(dashboard):
        query = parse_promql(expr)
        assert query.selectors, f"{where} names no metric: {expr}"
        for selector in query.selectors:
            matchers = {label: (op, value) for label, op, value in selector.matchers}
            for label, wanted in FILTER.items():
                assert matchers.get(label) == wanted, f"{where}: {selector.metric} is not filtered by {label}"
        unknown = {name for name in query.variables if not name.startswith("__")} - defined
        assert not unknown, f"{where} uses undefined variables {unknown}"
        # $__rate_interval: Grafana's window of at least four scrape intervals, whatever the zoom.
        assert all(window == "$__rate_interval" for window in query.windows), f"{where}: {query.windows}"


# The ConfigMap.


def test_dashboard_config_map() -> None:
    rendered = render_value_set(VALUE_SET)
    config_map = rendered.one("ConfigMap", CONFIG_MAP)
    metadata = config_map["metadata"]
    assert metadata["namespace"] == NAMESPACE
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/instance"] == rendered.deployment["metadata"]["labels"][
        "app.kubernetes.io/instance"
    ]
    assert metadata["annotations"] == load_value_set(VALUE_SET)["dashboards"]["annotations"]
    assert list(config_map["data"]) == [DASHBOARD_KEY]
    assert config_map["data"][DASHBOARD_KEY] == DASHBOARD_FILE.read_text(), "the file, byte for byte"
    # ConfigMaps hold at most 1 MiB.
    assert len(rendered.manifests["codepipeline-gateway/templates/dashboards-configmap.yaml"].encode()) < 1024 * 1024
    # The dashboard is not the gateway's configuration: turning it on (or changing it) rolls no pods.
    assert render_value_set(VALUE_SET, {"dashboards": {"enabled": False}}).deployment == rendered.deployment


def test_dashboard_config_map_settings() -> None:
    rendered = render({
        "dashboards": {"enabled": True, "label": "example.com/dashboard", "labelValue": 7, "namespace": "monitoring"},
        "fullnameOverride": "g" * 63,
    })  # fmt: skip
    config_maps = {c["metadata"]["name"]: c for c in rendered.all("ConfigMap")}
    assert set(config_maps) == {"g" * 63, "g" * 52 + "-dashboards"}, "a long name keeps its suffix"
    dashboards = config_maps["g" * 52 + "-dashboards"]["metadata"]
    assert dashboards["namespace"] == "monitoring"
    assert dashboards["labels"]["example.com/dashboard"] == "7", "a label value is a string, whatever --set makes of it"
    assert "grafana_dashboard" not in dashboards["labels"]
    assert dashboards["annotations"] == {}
    assert render({"dashboards": {"enabled": False, "namespace": "monitoring"}}).maybe("ConfigMap", CONFIG_MAP) is None


def test_config_map_holds_the_dashboard_that_is_checked(dashboard) -> None:
    data = render_value_set(VALUE_SET).one("ConfigMap", CONFIG_MAP)["data"][DASHBOARD_KEY]
    assert load_dashboard(data) == dashboard


# Against a live gateway.


@dataclass
class Exposition:
    """A /metrics page: sample name -> label sets, and family -> type from the TYPE lines."""

    types: dict[str, str]
    samples: dict[str, list[dict[str, str]]]

    def family(self, sample: str) -> tuple[str, str]:
        """(family, type) of a sample name: `x_total` of counter `x`, `x_bucket` of histogram `x`, ..."""
        if sample in self.types:
            return sample, self.types[sample]
        for suffix in ("_total", "_created", "_bucket", "_sum", "_count"):
            base = sample.removesuffix(suffix)
            if base != sample and base in self.types:
                return base, self.types[base]
        return sample, "untyped"

    def labels(self, sample: str) -> set[str]:
        return {label for series in self.samples.get(sample, []) for label in series}

    def values(self, sample: str, label: str) -> set[str]:
        return {series[label] for series in self.samples.get(sample, []) if label in series}


SAMPLE = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>(?:[^\"}]|\"(?:\\.|[^\"\\])*\")*)\})?\s+\S+")
LABEL_PAIR = re.compile(r'\s*([A-Za-z_]\w*)="((?:\\.|[^"\\])*)"\s*,?')


def parse_exposition(text: str) -> Exposition:
    types: dict[str, str] = {}
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if match := re.match(r"# TYPE (\S+) (\S+)", line):
            types[match.group(1)] = match.group(2)
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            labels = {k: re.sub(r"\\(.)", r"\1", v) for k, v in LABEL_PAIR.findall(match["labels"] or "")}
            samples.setdefault(match["name"], []).append(labels)
    return Exposition(types, samples)


def code_of(result: subprocess.CompletedProcess[str]) -> str:
    if result.returncode == 0:
        return "OK"
    match = re.search(r"Code: (\w+)", result.stdout + result.stderr)
    assert match, f"grpcurl failed without a gRPC status:\n{result.stdout}{result.stderr}"
    return match.group(1)


def call(
    gateway: Gateway, method: str, body: dict[str, Any], token: str | None, code: str, service: str = JOB_WORKER
) -> str:
    result = gateway.call(f"{service}/{method}", body, token)
    assert code_of(result) == code, f"{method} with {token!r}: {result.stdout}{result.stderr}"
    return result.stdout


def burst(gateway: Gateway, token: str, *, calls: int = 4, rounds: int = 5) -> list[str]:
    """`calls` PollForJobs at once, again until one is refused with RESOURCE_EXHAUSTED (the value
    set's limits allow one call a second); returns the refusal messages."""
    for _ in range(rounds):
        command = gateway.grpcurl_command(*gateway.call_args(POLL_METHOD, DEMO_POLL, token))
        running = [
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
            )
            for _ in range(calls)
        ]
        outputs = [(process.communicate(timeout=30)[0], process.returncode) for process in running]
        refused = [out for out, returncode in outputs if returncode != 0 and "Code: ResourceExhausted" in out]
        assert all(returncode == 0 or "Code: ResourceExhausted" in out for out, returncode in outputs), outputs
        if refused:
            return refused
    pytest.fail(f"{rounds} bursts of {calls} calls at once were never rate-limited")


def open_job_stream(gateway: Gateway, token: str) -> None:
    """A StreamJobs subscription held open for a second, so the feed starts and polls."""
    subscription = {"subscription": {"actionTypeId": DEMO_POLL["actionTypeId"], "maxOutstandingJobs": 1}}
    args = gateway.call_args(f"{JOB_WORKER}/StreamJobs", subscription, token)
    args[args.index("-d") + 1] = "@"
    process = subprocess.Popen(
        gateway.grpcurl_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    process.stdin.write(json.dumps(subscription) + "\n")
    process.stdin.flush()
    time.sleep(1)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out


def drive_calls(gateway: Gateway) -> None:
    """Calls that make the gateway's labelled series appear: accepted ones, upstream calls, each
    kind of refusal. A new metric that appears only after some call needs that call here."""
    (job,) = json.loads(call(gateway, "PollForJobs", DEMO_POLL, WORKERS_TOKEN, "OK"))["jobs"]
    call(gateway, "AcknowledgeJob", {"jobId": job["id"], "nonce": job["nonce"]}, WORKERS_TOKEN, "OK")
    call(gateway, "PollForJobs", DEMO_POLL, None, "Unauthenticated")  # missing_credentials
    call(gateway, "PollForJobs", DEMO_POLL, "not-a-client-token", "Unauthenticated")  # invalid_token
    call(gateway, "GetJobDetails", {"jobId": job["id"]}, WORKERS_TOKEN, "PermissionDenied")  # forbidden
    open_job_stream(gateway, WORKERS_TOKEN)  # the job feed's series
    # Third-party calls with no client token: the gateway supplies the demo client's, found from
    # its own poll (client_from="poll"), then from the client_id the worker sends ("request").
    (partner_job,) = json.loads(
        call(gateway, "PollForThirdPartyJobs", DEMO_PARTNER_POLL, PARTNER_WORKERS_TOKEN, "OK", THIRD_PARTY)
    )["jobs"]
    unnamed = {"jobId": partner_job["jobId"]}
    details = json.loads(call(gateway, "GetThirdPartyJobDetails", unnamed, PARTNER_WORKERS_TOKEN, "OK", THIRD_PARTY))
    named = {**unnamed, "clientId": partner_job["clientId"], "nonce": details["jobDetails"]["nonce"]}
    call(gateway, "AcknowledgeThirdPartyJob", named, PARTNER_WORKERS_TOKEN, "OK", THIRD_PARTY)
    # The upstream budget (one PollForJobs a second for everyone), then the paced client's own rate.
    assert any("operation:PollForJobs" in out for out in burst(gateway, WORKERS_TOKEN))
    for _ in range(5):
        if any("client:paced" in out for out in burst(gateway, PACED_TOKEN)):
            break
    else:
        pytest.fail("the paced client was never refused by its own rate limit")


@pytest.fixture(scope="module")
def scraped(external_secrets, pki, tmp_path_factory) -> Exposition:
    """The `dashboards` value set's gateway container, started from the chart, after
    `drive_calls`: its /metrics page."""
    processes: list = []
    try:
        gateway = start_serving(VALUE_SET, external_secrets, pki, tmp_path_factory.mktemp("dashboards"), processes)
        assert "CPGW_TOKEN_FILE" in gateway.env, "the token-file metrics need a token file"
        assert "CPGW_CLIENT_TOKEN_FILE" in gateway.env, "the client-token file metrics need a client-token file"
        drive_calls(gateway)
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10) as response:
            page = response.read().decode()
    finally:
        for process in processes:
            process.stop()
    exposition = parse_exposition(page)
    # The calls did what drive_calls says.
    assert exposition.values("gateway_rate_limited_total", "scope") >= {"client", "upstream"}, exposition.samples
    assert exposition.values("gateway_auth_rejected_total", "reason") >= {
        "missing_credentials", "invalid_token", "forbidden",
    }  # fmt: skip
    assert exposition.values("gateway_client_tokens_supplied_total", "client_from") == {"poll", "request"}
    return exposition


def test_every_metric_a_query_names_is_served(queries, scraped: Exposition) -> None:
    missing = sorted(
        {(where, s.metric) for where, query in queries for s in query.selectors if s.metric not in scraped.samples}
    )
    assert missing == [], f"named by the dashboard, not on /metrics: {missing}\nserved: {sorted(scraped.samples)}"


def test_every_label_a_query_uses_is_served(queries, scraped: Exposition) -> None:
    problems = []
    for where, query in queries:
        served = set().union(*(scraped.labels(s.metric) for s in query.selectors)) if query.selectors else set()
        for label in query.grouping - served - TARGET_LABELS:
            problems.append(f"{where}: groups by {label!r}, which none of its metrics has")
        for selector in query.selectors:
            for label, op, value in selector.matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in scraped.labels(selector.metric):
                    problems.append(f"{where}: {selector.metric} has no label {label!r}")
                    continue
                if "$" in value:
                    continue
                values = scraped.values(selector.metric, label)
                if op in ("=", "!=") and value not in values:
                    problems.append(f"{where}: {selector.metric}{{{label}{op}{value!r}}}: values are {sorted(values)}")
                if op == "=~" and not any(re.fullmatch(value, v) for v in values):
                    problems.append(f"{where}: {selector.metric}{{{label}=~{value!r}}} matches none of {values}")
    assert problems == []


def test_functions_get_the_metric_types_they_need(queries, scraped: Exposition) -> None:
    problems = []
    for where, query in queries:
        for selector in query.selectors:
            family, kind = scraped.family(selector.metric)
            suffix = selector.metric.removeprefix(family)
            if "histogram_quantile" in selector.within and (kind, suffix) != ("histogram", "_bucket"):
                problems.append(f"{where}: histogram_quantile over {selector.metric}, a {kind} {suffix or 'sample'}")
            if selector.within and selector.within[-1] in COUNTER_FUNCTIONS:
                counter_like = kind == "counter" or (
                    kind in ("histogram", "summary") and suffix in ("_bucket", "_sum", "_count")
                )
                if not counter_like:
                    problems.append(f"{where}: {selector.within[-1]}() over {selector.metric}, a {kind}")
    assert problems == []


def test_no_served_label_clashes_with_a_target_label(scraped: Exposition) -> None:
    """Prometheus would rename such a label to exported_<label> and the dashboard's filter would
    not see it."""
    clashes = {(name, label) for name in scraped.samples for label in scraped.labels(name) & TARGET_LABELS}
    assert clashes == set()


def test_every_documented_metric_has_a_panel(queries) -> None:
    """The Observability page's table lists the gateway's metrics: each is on the dashboard."""
    section = (REPO_ROOT / "docs" / "observability.md").read_text()
    documented = re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", section, re.M)
    assert len(documented) >= 12, documented

    def base(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count|created)$", "", name)

    shown = {base(s.metric) for where, query in queries if where.startswith("panel") for s in query.selectors}
    assert sorted(name for name in documented if base(name) not in shown) == []
