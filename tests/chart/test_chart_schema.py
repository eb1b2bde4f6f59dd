"""values.schema.json: every value set passes; wrong types, unknown keys and bad enum values are
rejected by Helm itself, both when values are validated and when the chart is rendered (which is
what `helm install` and `helm upgrade` do)."""

from __future__ import annotations

import json

import helm_python as helm
import pytest
from chart_support import CHART_DIR, VALUE_SETS, load_value_set, render

SHA = "0b22cf80f9aa016c58e440344b02d8cc0661c8f71a4bafad540b5cfcf648e88e"
PARTNER_CLIENT = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"
THIRD_PARTY_RPCS = [
    "PollForThirdPartyJobs", "AcknowledgeThirdPartyJob", "GetThirdPartyJobDetails", "PutThirdPartyJobSuccessResult",
    "PutThirdPartyJobFailureResult",
]  # fmt: skip

REJECTED = {
    # wrong types
    "replicaCount as a string": ({"replicaCount": "two"}, "replicaCount"),
    "port as a string": ({"server": {"grpcPort": "50051"}}, "grpcPort"),
    "port out of range": ({"server": {"grpcPort": 70000}}, "grpcPort"),
    "boolean as a string": ({"tls": {"enabled": "yes"}}, "enabled"),
    "seconds as a duration": ({"server": {"lameDuckSeconds": "5s"}}, "lameDuckSeconds"),
    "duration as a number": ({"aws": {"connectTimeout": 3}}, "connectTimeout"),
    "malformed duration": ({"aws": {"operationTimeout": "fifteen seconds"}}, "operationTimeout"),
    "clients as a string": ({"auth": {"clients": "python-workers"}}, "clients"),
    "account id as a number": ({"emulator": {"accountId": 123456789012}}, "accountId"),
    "annotations with a number": ({"podAnnotations": {"a": 1}}, "podAnnotations"),
    "max attempts out of range": ({"aws": {"maxAttempts": 11}}, "maxAttempts"),
    "pdb as a word": ({"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
    # unknown keys
    "unknown top-level key": ({"replicas": 3}, "replicas"),
    "another unknown top-level key": ({"ingress": {"enabled": True}}, "ingress"),
    "unknown nested key": ({"aws": {"regoin": "eu-west-1"}}, "regoin"),
    "unknown client key": (
        {"auth": {"clients": [{"id": "a", "tokenSha256": SHA, "allowedRpcs": ["*"], "token": "x"}]}},
        "token",
    ),
    # bad enum values and patterns
    "bad upstream": ({"upstream": "gcp"}, "upstream"),
    "bad log format": ({"log": {"format": "xml"}}, "format"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "digest without its algorithm": ({"image": {"digest": "ab" * 32}}, "digest"),
    "digest with the tag": ({"image": {"digest": "1.0@sha256:" + "ab" * 32}}, "digest"),
    "bad service type": ({"service": {"type": "ExternalName"}}, "type"),
    "bad rpc name": (
        {"auth": {"clients": [{"id": "a", "tokenSha256": SHA, "allowedRpcs": ["PollForJob"]}]}},
        "allowedRpcs",
    ),
    "token instead of its hash": (
        {"auth": {"clients": [{"id": "a", "tokenSha256": "python-workers-token", "allowedRpcs": ["*"]}]}},
        "tokenSha256",
    ),
    "client without permissions": ({"auth": {"clients": [{"id": "a", "tokenSha256": SHA}]}}, "allowedRpcs"),
    "burst without a rate": (
        {"auth": {"clients": [{"id": "a", "tokenSha256": SHA, "allowedRpcs": ["*"], "burst": 5}]}},
        "ratePerSecond",
    ),
    "poll interval as a number": ({"auth": {"tokenFilePollInterval": 2}}, "tokenFilePollInterval"),
    "bad region": ({"aws": {"region": "Europe"}}, "region"),
    "bad role arn": ({"serviceAccount": {"roleArn": "codepipeline-job-worker"}}, "roleArn"),
    "gateway setting through extraEnv": ({"extraEnv": [{"name": "CPGW_LOG", "value": "debug"}]}, "extraEnv"),
    "bad topology policy": ({"topologySpread": {"whenUnsatisfiable": "Maybe"}}, "whenUnsatisfiable"),
    "dashboards as a boolean": ({"dashboards": True}, "dashboards"),
    "unknown dashboards key": ({"dashboards": {"folder": "CI"}}, "folder"),
    "dashboard label with a space": ({"dashboards": {"label": "grafana dashboard"}}, "label"),
    "dashboard label value too long": ({"dashboards": {"labelValue": "x" * 64}}, "labelValue"),
    "dashboard label value as a boolean": ({"dashboards": {"labelValue": True}}, "labelValue"),
    "dashboard namespace in capitals": ({"dashboards": {"namespace": "Monitoring"}}, "namespace"),
    "dashboard annotation as a number": ({"dashboards": {"annotations": {"a": 1}}}, "annotations"),
    # rate limits in Redis
    "unknown rate-limit backend": ({"rateLimit": {"backend": "memcached"}}, "backend"),
    "rate-limit backend in capitals": ({"rateLimit": {"backend": "Redis"}}, "backend"),
    "redis backend without a URL": ({"rateLimit": {"backend": "redis"}}, "/redis/url"),
    "redis backend with empty URL sources": (
        {"rateLimit": {"backend": "redis"}, "redis": {"url": "", "existingSecret": ""}},
        "/redis/existingSecret",
    ),
    "redis URL without its scheme": ({"redis": {"url": "redis-master.redis.svc:6379"}}, "url"),
    "redis URL of another scheme": ({"redis": {"url": "http://redis-master:6379"}}, "url"),
    "fail closed as a string": ({"rateLimit": {"failClosed": "yes"}}, "failClosed"),
    "redis timeout as a number": ({"redis": {"timeout": 25}}, "timeout"),
    "malformed redis timeout": ({"redis": {"timeout": "25 millis"}}, "timeout"),
    "redis password as a value": ({"redis": {"password": "hunter2"}}, "password"),
    "unknown rate-limit key": ({"rateLimit": {"perSecond": 5}}, "perSecond"),
    "redis secret name in capitals": ({"redis": {"existingSecret": "Gateway-Redis"}}, "existingSecret"),
    "redis password key with a slash": ({"redis": {"passwordKey": "a/b"}}, "passwordKey"),
    "redis egress port out of range": ({"networkPolicy": {"egress": {"redis": {"port": 70000}}}}, "port"),
    "redis egress peers as a string": ({"networkPolicy": {"egress": {"redis": {"to": "redis"}}}}, "to"),
    # third-party client tokens: a Secret's name and key, never the tokens
    "client tokens as values": (
        {"thirdParty": {"clientTokens": {"clients": [{"client_id": PARTNER_CLIENT, "client_token": "t"}]}}},
        "clients",
    ),
    "a client token as a value": ({"thirdParty": {"clientTokens": {"clientToken": "t"}}}, "clientToken"),
    "client-token file inline": ({"thirdParty": {"clientTokens": {"file": "[[clients]]"}}}, "file"),
    "unknown third-party key": ({"thirdParty": {"clientTokenFile": "/tmp/t.toml"}}, "clientTokenFile"),
    "third party as a boolean": ({"thirdParty": True}, "thirdParty"),
    "client tokens as a string": ({"thirdParty": {"clientTokens": "partner-client-tokens"}}, "clientTokens"),
    "client-token secret name in capitals": (
        {"thirdParty": {"clientTokens": {"existingSecret": "Partner-Tokens"}}},
        "existingSecret",
    ),
    "client-token secret name too long": (
        {"thirdParty": {"clientTokens": {"existingSecret": "a" * 254}}},
        "existingSecret",
    ),
    "client-token secret name as a number": ({"thirdParty": {"clientTokens": {"existingSecret": 7}}}, "existingSecret"),
    "client-token key with a slash": ({"thirdParty": {"clientTokens": {"key": "tokens/client.toml"}}}, "key"),
    "empty client-token key": ({"thirdParty": {"clientTokens": {"key": ""}}}, "key"),
    "bad third-party rpc name": (
        {"auth": {"clients": [{"id": "a", "tokenSha256": SHA, "allowedRpcs": ["PollForThirdPartyJob"]}]}},
        "allowedRpcs",
    ),
    # tracing
    "otlp endpoint without its scheme": ({"tracing": {"otlpEndpoint": "otel-collector:4317"}}, "otlpEndpoint"),
    # The gateway's exporter has no TLS: it refuses to start (test_chart_drift.py checks it does).
    "otlp endpoint over grpc://": ({"tracing": {"otlpEndpoint": "grpc://otel-collector:4317"}}, "otlpEndpoint"),
    "otlp endpoint of another scheme": ({"tracing": {"otlpEndpoint": "grpc://otel-collector:4317"}}, "otlpEndpoint"),
    # Without a port the exporter would dial 80, not OTLP's 4317.
    "otlp endpoint without a port": ({"tracing": {"otlpEndpoint": "http://otel-collector"}}, "otlpEndpoint"),
    "otlp/http endpoint with its path": (
        {"tracing": {"otlpEndpoint": "http://otel-collector:4318/v1/traces"}},
        "otlpEndpoint",
    ),
    "otlp endpoint with a space": ({"tracing": {"otlpEndpoint": "http://otel collector:4317"}}, "otlpEndpoint"),
    "otlp endpoint as a boolean": ({"tracing": {"otlpEndpoint": True}}, "otlpEndpoint"),
    "sampling ratio above 1": ({"tracing": {"samplingRatio": 1.5}}, "samplingRatio"),
    "negative sampling ratio": ({"tracing": {"samplingRatio": -0.1}}, "samplingRatio"),
    "sampling ratio as a string": ({"tracing": {"samplingRatio": "0.5"}}, "samplingRatio"),
    "sampling ratio as a percentage": ({"tracing": {"samplingRatio": "50%"}}, "samplingRatio"),
    "sampling ratio as a boolean": ({"tracing": {"samplingRatio": True}}, "samplingRatio"),
    "service name as a number": ({"tracing": {"serviceName": 7}}, "serviceName"),
    "resource attributes as a string": (
        {"tracing": {"resourceAttributes": "deployment.environment.name=prod"}},
        "resourceAttributes",
    ),
    "resource attributes as a list": ({"tracing": {"resourceAttributes": [{"team": "ci"}]}}, "resourceAttributes"),
    "resource attribute as a number": ({"tracing": {"resourceAttributes": {"service.version": 1.2}}}, "service.version"),
    "resource attribute as a boolean": ({"tracing": {"resourceAttributes": {"canary": True}}}, "canary"),
    "resource attribute with a comma": ({"tracing": {"resourceAttributes": {"team": "ci,cd"}}}, "team"),
    "resource attribute key with =": ({"tracing": {"resourceAttributes": {"a=b": "c"}}}, "propertyName 'a=b'"),
    "resource attribute key with a comma": ({"tracing": {"resourceAttributes": {"a,b": "c"}}}, "propertyName 'a,b'"),
    # The gateway sets its own service.name over it: tracing.serviceName is the way.
    "service name as a resource attribute": (
        {"tracing": {"resourceAttributes": {"service.name": "gw"}}},
        "propertyName 'service.name'",
    ),
    "unknown tracing key": ({"tracing": {"enabled": True}}, "enabled"),
    "tracing as a string": ({"tracing": "http://otel-collector:4317"}, "tracing"),
    "otlp egress port out of range": ({"networkPolicy": {"egress": {"otlp": {"port": 0}}}}, "port"),
    "otlp egress peers as a string": ({"networkPolicy": {"egress": {"otlp": {"to": "otel-collector"}}}}, "to"),
    "unknown otlp egress key": ({"networkPolicy": {"egress": {"otlp": {"cidr": "10.0.0.0/8"}}}}, "cidr"),
    "otlp endpoint through extraEnv": (
        {"extraEnv": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4317"}]},
        "extraEnv",
    ),
    "resource attributes through extraEnv": (
        {"extraEnv": [{"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "team=ci"}]},
        "extraEnv",
    ),
}


def test_accepted_client_shapes(chart) -> None:
    chart.validate_schema({"auth": {"clients": [
        {"id": "mtls-only", "allowedRpcs": ["GetJobDetails"]},
        {"id": "full", "tokenSha256": SHA, "allowedRpcs": ["codepipeline.jobworker.v1.JobWorkerService/PollForJobs"]},
        {"id": "admin", "tokenSha256": SHA.upper(), "allowedRpcs": ["CreateJob", "ListJobs"], "ratePerSecond": 1},
    ]}})  # fmt: skip


def test_accepted_third_party_rpcs(chart) -> None:
    """The third-party RPCs by name and by full name, in the enum the Rust tidy test holds to the
    binary's methods."""
    full = [f"codepipeline.jobworker.v1.ThirdPartyJobWorkerService/{name}" for name in THIRD_PARTY_RPCS]
    chart.validate_schema({"auth": {"clients": [
        {"id": "partner-workers", "tokenSha256": SHA, "allowedRpcs": THIRD_PARTY_RPCS},
        {"id": "partner-workers-full", "tokenSha256": SHA.upper(), "allowedRpcs": full},
    ]}})  # fmt: skip
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    rpcs = schema["properties"]["auth"]["properties"]["clients"]["items"]["properties"]["allowedRpcs"]
    assert set(THIRD_PARTY_RPCS) <= set(rpcs["items"]["anyOf"][0]["enum"])


def test_accepted_client_token_settings(chart) -> None:
    chart.validate_schema({"thirdParty": {"clientTokens": {"existingSecret": "partner-client-tokens"}}})
    chart.validate_schema(
        {"thirdParty": {"clientTokens": {"existingSecret": "team.partner-tokens", "key": "a_b-1.toml"}}}
    )
    chart.validate_schema({"thirdParty": {"clientTokens": {"existingSecret": ""}}})  # none: workers send their own
    chart.validate_schema({"thirdParty": {}})


def test_accepted_dashboard_settings(chart) -> None:
    chart.validate_schema({"dashboards": {
        "enabled": True, "label": "example.com/grafana-dashboard", "labelValue": 1, "namespace": "monitoring",
        "annotations": {"k8s-sidecar-target-directory": "CI"},
    }})  # fmt: skip
    chart.validate_schema({"dashboards": {"labelValue": ""}})  # a sidecar matching any value


def test_accepted_tracing_settings(chart) -> None:
    for endpoint in (
        "", "http://otel-collector.observability:4317", "http://otel-collector.observability.svc.cluster.local:4317/",
        "http://10.0.0.7:4317", "http://[fd00:ec2::7]:4317", "http://localhost:4317",
    ):  # fmt: skip
        chart.validate_schema({"tracing": {"otlpEndpoint": endpoint}})
    for ratio in (0, 0.01, 0.5, 1, 1.0):
        chart.validate_schema({"tracing": {"samplingRatio": ratio}})
    chart.validate_schema({"tracing": {"serviceName": "ci-job-gateway", "resourceAttributes": {
        "deployment.environment.name": "production", "k8s.cluster.name": "eks-eu-west-1",
        "k8s.node.name": "$(NODE_NAME)", "cloud.region": "eu-west-1", "note": "a=b", "empty": "",
    }}})  # fmt: skip
    chart.validate_schema({"networkPolicy": {"egress": {"otlp": {
        "port": 4317, "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    }}}})  # fmt: skip
    # Other OpenTelemetry settings through extraEnv, e.g. the batch exporter's interval.
    chart.validate_schema({"extraEnv": [{"name": "OTEL_BSP_SCHEDULE_DELAY", "value": "1000"}]})


def test_accepted_redis_settings(chart) -> None:
    """Either URL source satisfies `rateLimit.backend: redis`; a memory backend needs neither."""
    chart.validate_schema({"rateLimit": {"backend": "redis"}, "redis": {"url": "redis://redis:6379"}})
    chart.validate_schema({"rateLimit": {"backend": "redis"}, "redis": {"existingSecret": "gateway-redis"}})
    chart.validate_schema({"rateLimit": {"backend": "redis", "failClosed": True}, "redis": {
        "url": "rediss://default:p%40ss@master.cache.euw1.cache.amazonaws.com:6379/2?protocol=resp3",
        "passwordSecret": "redis", "tlsCaSecret": "redis-ca", "keyPrefix": "", "timeout": "1s",
    }})  # fmt: skip
    chart.validate_schema({"rateLimit": {"backend": "memory"}, "redis": {"url": ""}})


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_value_sets_pass(chart, value_set: str) -> None:
    chart.validate_schema(load_value_set(value_set))


def test_the_defaults_pass(chart) -> None:
    chart.validate_schema({})
    chart.validate_schema(chart.values)


@pytest.mark.parametrize(("values", "named"), REJECTED.values(), ids=REJECTED.keys())
def test_rejected(chart, values: dict, named: str) -> None:
    with pytest.raises(helm.HelmValuesError) as validated:
        chart.validate_schema(values)
    assert named in str(validated.value), str(validated.value)
    with pytest.raises(helm.HelmValuesError) as rendered:
        render(values)
    assert named in str(rendered.value), str(rendered.value)


def test_schema_closes_every_object_of_the_chart() -> None:
    """Objects the chart defines reject unknown keys; only Kubernetes objects passed through
    as they are (resources, affinity, security contexts, EnvVars, ...) are open."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    kubernetes_objects = {"extraEnv[]"}  # EnvVar: only its name is checked
    open_objects = set()

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object":
            if "properties" in node and path not in kubernetes_objects:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
                for key, child in node["properties"].items():
                    walk(child, f"{path}.{key}" if path else key)
            else:
                open_objects.add(path)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    assert open_objects == {
        "podSecurityContext", "securityContext", "resources", "updateStrategy", "affinity",
        "autoscaling.behavior", "global", "extraEnv[]",
        # maps of strings (additionalProperties: string)
        "serviceAccount.annotations", "service.annotations", "podAnnotations", "podLabels",
        "nodeSelector", "serviceMonitor.labels", "dashboards.annotations", "tracing.resourceAttributes",
        # lists of Kubernetes objects
        "tolerations[]", "networkPolicy.grpcFrom[]", "networkPolicy.metricsFrom[]",
        "networkPolicy.egress.redis.to[]", "networkPolicy.egress.otlp.to[]", "networkPolicy.egress.extra[]",
        "serviceMonitor.relabelings[]",
        "serviceMonitor.metricRelabelings[]",
    }, sorted(open_objects)  # fmt: skip
