"""The chart rendered with each value set in values/: every object valid against the Kubernetes
API schemas (kubernetes-validate, offline, strict: unknown fields are errors), and the objects
consistent with each other (ports, selectors, grace period, checksum)."""

from __future__ import annotations

import hashlib
import re
import shutil
import tomllib

import helm_python as helm
import kubernetes_validate
import pytest
from chart_support import (
    CHART_DIR,
    FULLNAME,
    KUBERNETES_VERSION,
    NAMESPACE,
    POD,
    RELEASE,
    SERVICE_HOST,
    VALUE_SETS,
    PodIdentity,
    Rendered,
    chart_metadata,
    duration_seconds,
    listen_port,
    load_value_set,
    merge,
    render,
    render_value_set,
    sha256_hex,
)

# Custom resources have no schema in kubernetes-validate (it ships the core API only). Their
# schema validation is skipped on purpose, and their shape is checked by hand below
# (test_service_monitor).
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def minimum_kubernetes_version() -> str:
    match = re.fullmatch(r">=(\d+\.\d+)\.\d+(-0)?", chart_metadata()["kubeVersion"])
    assert match, chart_metadata()["kubeVersion"]
    return match.group(1)


@pytest.fixture(scope="module", params=VALUE_SETS)
def value_set(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(value_set: str) -> Rendered:
    return render_value_set(value_set)


def test_every_object_is_valid_kubernetes(rendered: Rendered) -> None:
    versions = [KUBERNETES_VERSION]
    # The preStop `sleep` action exists from Kubernetes 1.29 (on by default from 1.30); the
    # chart's declared minimum is checked wherever it is not used.
    if "lifecycle" not in rendered.container:
        versions.append(minimum_kubernetes_version())
    kinds = [obj["kind"] for obj in rendered.objects]
    assert {"ConfigMap", "Deployment", "Service", "Pod"} <= set(kinds), kinds
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is invalid in Kubernetes {version}: {error}")


def test_the_validator_is_strict() -> None:
    """kubernetes-validate really checks: a misspelt field and a wrong type are errors."""
    deployment = render().deployment
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    service = render().gateway_service
    service["spec"]["ports"][0]["port"] = "fifty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
    pod = render({"preStopSleepSeconds": 3}).deployment
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.28", strict=True)  # no `sleep` action before 1.29


def test_objects_are_named_and_labelled_for_the_release(rendered: Rendered) -> None:
    for obj in rendered.objects:
        metadata = obj["metadata"]
        assert metadata["namespace"] == NAMESPACE, metadata
        assert metadata["name"].startswith(FULLNAME), metadata["name"]
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert len(metadata["name"]) <= 63


def test_pod_security(rendered: Rendered) -> None:
    pod = rendered.pod_spec
    container = rendered.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), container["resources"]


def test_the_container_runs_the_gateway(rendered: Rendered) -> None:
    container = rendered.container
    assert container["command"] == ["/usr/local/bin/codepipeline-gateway"]
    assert container["args"] == ["serve"]
    env = rendered.container_env()
    upstream = load_value_set_upstream(rendered)
    assert env["CPGW_UPSTREAM"] == upstream
    # The gateway's variables, and the OpenTelemetry SDK's the chart sets there.
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}
    assert all(name.startswith("CPGW_") or name in otel for name in rendered.one("ConfigMap", FULLNAME)["data"])


def env_of(rendered: Rendered) -> dict[str, str]:
    return rendered.container_env()


def load_value_set_upstream(rendered: Rendered) -> str:
    return rendered.one("ConfigMap", FULLNAME)["data"]["CPGW_UPSTREAM"]


def test_ports_line_up(rendered: Rendered) -> None:
    """The probes, containerPorts and Service targetPorts point at the ports the gateway's
    listeners are configured with."""
    env = rendered.container_env()
    grpc_port = listen_port(env["CPGW_LISTEN"])
    metrics_port = listen_port(env["CPGW_METRICS_LISTEN"])
    assert env["CPGW_LISTEN"].startswith("0.0.0.0:") and env["CPGW_METRICS_LISTEN"].startswith("0.0.0.0:")
    assert rendered.container_port("grpc") == grpc_port
    assert rendered.container_port("metrics") == metrics_port

    tls = "CPGW_TLS_CERT" in env
    for probe_kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = rendered.container[probe_kind]
        if tls:
            # The kubelet's gRPC probes speak plaintext only.
            assert "grpc" not in probe
            assert rendered.container_port(probe["tcpSocket"]["port"]) == grpc_port
        else:
            assert probe["grpc"] == {"port": grpc_port}, probe
            assert "service" not in probe["grpc"]

    ports = {p["name"]: p for p in rendered.gateway_service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert rendered.container_port(ports["grpc"]["targetPort"]) == grpc_port
    assert rendered.container_port(ports["metrics"]["targetPort"]) == metrics_port
    for service in rendered.all("Service"):
        for port in service["spec"]["ports"]:
            rendered.container_port(port["targetPort"])


def test_selectors_pick_the_gateway_pods_only(rendered: Rendered) -> None:
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for service in rendered.all("Service"):
        assert service["spec"]["selector"] == selector
    for constraint in rendered.pod_spec.get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"] == selector
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    for pdb in rendered.all("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    for policy in rendered.all("NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"] == selector
    for hpa in rendered.all("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", rendered.deployment["metadata"]["name"])
    (test_pod,) = [p for p in rendered.all("Pod")]
    assert not selector.items() <= test_pod["metadata"]["labels"].items(), "the Service would pick the test pod"


def test_topology_spread_by_default(rendered: Rendered) -> None:
    keys = [c["topologyKey"] for c in rendered.pod_spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]


def test_grace_period_fits_the_shutdown(rendered: Rendered) -> None:
    """The kubelet waits for the preStop hook, then the lame-duck period, then the drain, before
    it kills the container: the grace period must hold all three."""
    env = rendered.container_env()
    pre_stop = rendered.container.get("lifecycle", {}).get("preStop", {})
    assert "exec" not in pre_stop, "the runtime image has no shell"
    sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    needed = sleep + duration_seconds(env["CPGW_LAME_DUCK"]) + duration_seconds(env["CPGW_SHUTDOWN_TIMEOUT"])
    assert rendered.pod_spec["terminationGracePeriodSeconds"] >= needed


def test_config_checksum_annotation(rendered: Rendered) -> None:
    annotations = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    config_map = rendered.manifests["codepipeline-gateway/templates/configmap.yaml"]
    assert annotations["checksum/config"] == hashlib.sha256(config_map.encode()).hexdigest()


def test_helm_test_pod_checks_health_through_the_service(rendered: Rendered) -> None:
    (pod,) = rendered.all("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/grpc-ecosystem/grpc-health-probe:v0.4.40"
    service_port = next(p["port"] for p in rendered.gateway_service["spec"]["ports"] if p["name"] == "grpc")
    assert f"-addr={SERVICE_HOST}:{service_port}" in container["args"]
    assert ("-tls" in container["args"]) == ("CPGW_TLS_CERT" in rendered.container_env())
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_notes_show_grpcurl(rendered: Rendered) -> None:
    service_port = next(p["port"] for p in rendered.gateway_service["spec"]["ports"] if p["name"] == "grpc")
    assert f"port-forward svc/{FULLNAME} {service_port}:{service_port}" in rendered.notes
    assert "grpcurl " in rendered.notes
    assert "grpc.health.v1.Health/Check" in rendered.notes
    if "CPGW_TLS_CERT" in rendered.container_env():
        assert "-plaintext" not in rendered.notes
    else:
        assert re.search(rf'grpcurl -plaintext( -H "[^"]+")? localhost:{service_port} list', rendered.notes)


# Per value set.


def test_defaults() -> None:
    rendered = render()
    env = rendered.container_env()
    assert env["CPGW_UPSTREAM"] == "aws"
    assert not {"CPGW_TOKEN_FILE", "CPGW_TLS_CERT", "CPGW_ALLOW_UNAUTHENTICATED"} & set(env)
    assert rendered.all("Secret") == []
    assert rendered.deployment["spec"]["replicas"] == 2
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"):
        assert rendered.all(kind) == [], f"{kind} must be off by default"
    assert [c["metadata"]["name"] for c in rendered.all("ConfigMap")] == [FULLNAME], "no dashboard by default"
    assert "lifecycle" not in rendered.container
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 5 + 25 + 5
    assert env["CPGW_LAME_DUCK"] == "5s" and env["CPGW_SHUTDOWN_TIMEOUT"] == "25s"
    assert "WARNING: no caller authentication is configured" in rendered.notes
    service_account = rendered.one("ServiceAccount")
    assert "eks.amazonaws.com/role-arn" not in service_account["metadata"]["annotations"]
    assert "create-pod-identity-association" in rendered.notes


def test_existing_secret() -> None:
    rendered = render_value_set("existing-secret")
    env = rendered.container_env()
    assert rendered.all("Secret") == [], "the chart must not create a token Secret"
    assert env["CPGW_TOKEN_FILE"] == "/etc/codepipeline-gateway/auth/clients.toml"
    (volume,) = [v for v in rendered.pod_spec["volumes"] if v["name"] == "tokens"]
    assert volume["secret"]["secretName"] == "gateway-tokens"
    assert volume["secret"]["items"] == [{"key": "clients.toml", "path": "clients.toml"}]
    (mount,) = rendered.container["volumeMounts"]
    assert mount["mountPath"] == "/etc/codepipeline-gateway/auth" and "subPath" not in mount
    annotations = rendered.one("ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::111122223333:role/codepipeline-job-worker"
    assert "WARNING" not in rendered.notes
    assert '-H "authorization: Bearer $TOKEN"' in rendered.notes
    assert "grpcurl -plaintext localhost:50051 list" in rendered.notes


def test_token_file_from_values() -> None:
    rendered = render_value_set("tokens")
    secret = rendered.one("Secret", f"{FULLNAME}-tokens")
    token_file = tomllib.loads(secret["stringData"]["tokens.toml"])
    assert token_file == {
        "clients": [
            {
                "id": "python-workers",
                "token_sha256": sha256_hex("python-workers-token"),
                "allowed_rpcs": [
                    "PollForJobs",
                    "AcknowledgeJob",
                    "GetJobDetails",
                    "PutJobSuccessResult",
                    "PutJobFailureResult",
                ],
                "rate_per_second": 20,
                "burst": 40,
            },
            {"id": "go-workers", "token_sha256": sha256_hex("go-workers-token"), "allowed_rpcs": ["*"]},
            {
                "id": "dashboards",
                "token_sha256": sha256_hex("dashboards-token"),
                "allowed_rpcs": ["GetJobDetails"],
                "rate_per_second": 5,
            },
            {
                "id": "team-b",
                "token_sha256": sha256_hex("team-b-token"),
                "allowed_rpcs": ["*"],
                "action_types": ["Build/Custom/OtherBuilder/*", "Deploy/ThirdParty/Acme*/*"],
                "partner_client_ids": ["5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"],
                "artifact_credentials": False,
            },
        ]
    }
    assert 'grpcurl -plaintext -H "authorization: Bearer $TOKEN" localhost:50051 list' in rendered.notes
    assert env_of(rendered)["CPGW_TOKEN_FILE_POLL_INTERVAL"] == "5s"
    assert env_of(rendered)["CPGW_REFLECTION_REQUIRES_AUTH"] == "true"
    assert env_of(rendered)["CPGW_UPSTREAM_RATE_LIMIT_PER_SECOND"] == "10"
    assert env_of(rendered)["CPGW_UPSTREAM_RATE_LIMIT_BURST"] == "20"
    env = rendered.container_env()
    assert env["CPGW_TOKEN_FILE"] == "/etc/codepipeline-gateway/auth/tokens.toml"
    assert env["CPGW_RATE_LIMIT_PER_SECOND"] == "50" and env["CPGW_RATE_LIMIT_BURST"] == "100"
    assert env["CPGW_MAX_CONCURRENT_CALLS"] == "256" and env["CPGW_MAX_MESSAGE_SIZE"] == "4194304"
    assert env["CPGW_MAX_CONNECTION_AGE"] == "5m" and env["CPGW_MAX_CONNECTION_AGE_GRACE"] == "30s"
    assert env["CPGW_HTTP2_KEEPALIVE_INTERVAL"] == "30s" and env["CPGW_HTTP2_KEEPALIVE_TIMEOUT"] == "10s"
    assert env["CPGW_AWS_REGION"] == "eu-west-1" and env["CPGW_AWS_MAX_ATTEMPTS"] == "5"
    assert env["CPGW_LOG"] == "codepipeline_gateway=debug,info" and env["CPGW_LOG_FORMAT"] == "text"
    # No plaintext token anywhere in what the chart renders.
    for manifest in rendered.manifests.values():
        assert "python-workers-token" not in manifest


def test_tls() -> None:
    rendered = render_value_set("tls")
    env = rendered.container_env()
    assert env["CPGW_TLS_CERT"] == "/etc/codepipeline-gateway/tls/tls.crt"
    assert env["CPGW_TLS_KEY"] == "/etc/codepipeline-gateway/tls/tls.key"
    assert "CPGW_TLS_CLIENT_CA" not in env
    (volume,) = [v for v in rendered.pod_spec["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "gateway-tls"
    (pod,) = rendered.all("Pod")
    args = pod["spec"]["containers"][0]["args"]
    assert "-tls-ca-cert=/etc/test/server-ca/ca.crt" in args
    assert f"-tls-server-name={SERVICE_HOST}" in args
    assert "-tls-no-verify" not in args


def test_mtls() -> None:
    rendered = render_value_set("mtls")
    env = rendered.container_env()
    assert env["CPGW_TLS_CLIENT_CA"] == "/etc/codepipeline-gateway/client-ca/ca.pem"
    assert "CPGW_TOKEN_FILE" not in env
    volumes = {v["name"]: v["secret"] for v in rendered.pod_spec["volumes"]}
    assert volumes["client-ca"]["secretName"] == "workers-ca"
    assert "WARNING" not in rendered.notes, "mTLS authenticates callers"
    (pod,) = rendered.all("Pod")
    assert "-tls-client-cert=/etc/test/client/tls.crt" in pod["spec"]["containers"][0]["args"]
    test_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"]}
    assert test_volumes == {"client": "test-client-tls"}
    # The client CA may also come from the server certificate's Secret (cert-manager's ca.crt).
    same = render({"tls": {"enabled": True, "secretName": "gateway-tls", "clientAuth": {"enabled": True}}})
    assert same.container_env()["CPGW_TLS_CLIENT_CA"] == "/etc/codepipeline-gateway/tls/ca.crt"
    assert [v["name"] for v in same.pod_spec["volumes"]] == ["tls"]


def test_hpa_and_pdb() -> None:
    rendered = render_value_set("hpa-pdb")
    assert "replicas" not in rendered.deployment["spec"], "the HPA owns the replica count"
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 60, "memory": 80}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 2 + 5 + 5


def test_network_policy() -> None:
    rendered = render_value_set("networkpolicy")
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule, metrics_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert len(grpc_rule["from"]) == 2 and len(metrics_rule["from"]) == 1
    egress_ports = [p["port"] for rule in policy["egress"] for p in rule.get("ports", [])]
    assert {53, 443, 80, 3128} <= set(egress_ports)
    env = rendered.container_env()
    assert env["CPGW_ALLOW_UNAUTHENTICATED"] == "true"
    assert env["HTTPS_PROXY"] == "http://proxy.egress-proxy.svc:3128"
    assert rendered.container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 60
    headless = rendered.one("Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    # Defaults: gRPC from the release's namespace, metrics from anywhere.
    default_policy = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")["spec"]
    assert default_policy["policyTypes"] == ["Ingress"]
    assert default_policy["ingress"][0]["from"] == [{"podSelector": {}}]
    assert "from" not in default_policy["ingress"][1]


def test_memory_backend_by_default() -> None:
    """Each pod's own limits unless the values say Redis; Redis settings alone change nothing."""
    for values in ({}, {"redis": {"url": "redis://redis:6379", "passwordSecret": "redis"}}):
        rendered = render(values)
        env = rendered.container_env()
        assert env["CPGW_RATE_LIMIT_BACKEND"] == "memory"
        assert not [name for name in env if name.startswith("CPGW_REDIS_")], env
        assert "CPGW_RATE_LIMIT_FAIL_CLOSED" not in env
        assert rendered.all("Secret") == [] and "volumes" not in rendered.pod_spec
        assert "checksum/redis" not in rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    egress = render({"networkPolicy": {"enabled": True, "egress": {"enabled": True}}}).one("NetworkPolicy")
    assert 6379 not in [p["port"] for rule in egress["spec"]["egress"] for p in rule.get("ports", [])]


def test_redis_url_from_values() -> None:
    """The URL, password and all, goes into the chart's Secret and reaches the container as env
    from it: never into the ConfigMap."""
    rendered = render_value_set("redis")
    url = load_value_set("redis")["redis"]["url"]
    secret = rendered.one("Secret", f"{FULLNAME}-redis")
    assert secret["type"] == "Opaque" and secret["stringData"] == {"url": url}
    (entry,) = [e for e in rendered.container["env"] if e["name"] == "CPGW_REDIS_URL"]
    assert entry == {
        "name": "CPGW_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": f"{FULLNAME}-redis", "key": "url"}},
    }
    env = rendered.container_env()
    assert env["CPGW_REDIS_URL"] == url
    assert env["CPGW_RATE_LIMIT_BACKEND"] == "redis" and env["CPGW_REDIS_TIMEOUT"] == "100ms"
    assert env["CPGW_REDIS_KEY_PREFIX"] == f"codepipeline-gateway:{NAMESPACE}/{FULLNAME}:"
    assert not {"CPGW_REDIS_PASSWORD_FILE", "CPGW_REDIS_TLS_CA", "CPGW_RATE_LIMIT_FAIL_CLOSED"} & set(env)
    config_map = rendered.manifests["codepipeline-gateway/templates/configmap.yaml"]
    assert "chart-checks-redis-password" not in config_map and "CPGW_REDIS_URL:" not in config_map
    for path, manifest in rendered.manifests.items():
        if "chart-checks-redis-password" in manifest:
            assert path == "codepipeline-gateway/templates/secret-redis.yaml", path
    # Only the token file is mounted: the password is in the URL.
    assert [m["name"] for m in rendered.container["volumeMounts"]] == ["tokens"]
    # The pods roll when the URL changes (the gateway reads it at start).
    def checksum(rendered: Rendered) -> str:
        return rendered.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/redis"]

    secret_manifest = rendered.manifests["codepipeline-gateway/templates/secret-redis.yaml"]
    assert checksum(rendered) == hashlib.sha256(secret_manifest.encode()).hexdigest()
    moved = render_value_set("redis", {"redis": {"url": "redis://:other@redis-new.redis.svc:6379/0"}})
    assert checksum(moved) != checksum(rendered)
    # The egress rule to the Redis pods.
    (rule,) = [r for r in rendered.one("NetworkPolicy")["spec"]["egress"] if only_tcp_port(r) == 6379]
    assert rule["to"] == load_value_set("redis")["networkPolicy"]["egress"]["redis"]["to"]
    prefix = f"codepipeline-gateway:{NAMESPACE}/{FULLNAME}:"
    assert f"Limits:   in Redis, shared by every pod (key prefix {prefix};" in rendered.notes


def only_tcp_port(rule: dict) -> int | None:
    """The port of a NetworkPolicy egress rule with one TCP port, else None."""
    ports = rule.get("ports", [])
    return ports[0]["port"] if len(ports) == 1 and ports[0]["protocol"] == "TCP" else None


def test_redis_from_existing_secrets() -> None:
    rendered = render_value_set("redis-existing-secret")
    assert rendered.all("Secret") == [], "the URL's Secret is the user's"
    (entry,) = [e for e in rendered.container["env"] if e["name"] == "CPGW_REDIS_URL"]
    assert entry["valueFrom"] == {"secretKeyRef": {"name": "gateway-redis", "key": "redis-url"}}
    env = rendered.container_env()
    assert env["CPGW_REDIS_URL"] == "secretKeyRef:gateway-redis/redis-url"
    assert env["CPGW_REDIS_PASSWORD_FILE"] == "/etc/codepipeline-gateway/redis-password/password"
    assert env["CPGW_REDIS_TLS_CA"] == "/etc/codepipeline-gateway/redis-ca/ca.crt"
    assert env["CPGW_REDIS_KEY_PREFIX"] == "ci-gateways:" and env["CPGW_RATE_LIMIT_FAIL_CLOSED"] == "true"
    volumes = {v["name"]: v["secret"] for v in rendered.pod_spec["volumes"]}
    assert volumes["redis-password"] == {
        "secretName": "gateway-redis-password", "defaultMode": 0o440,
        "items": [{"key": "password", "path": "password"}],
    }  # fmt: skip
    assert volumes["redis-ca"] == {
        "secretName": "redis-ca", "defaultMode": 0o440, "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }  # fmt: skip
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["redis-password"]["mountPath"] == "/etc/codepipeline-gateway/redis-password"
    assert mounts["redis-ca"]["mountPath"] == "/etc/codepipeline-gateway/redis-ca"
    assert all(m["readOnly"] and "subPath" not in m for m in mounts.values())
    annotations = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/redis" not in annotations, "the chart cannot see a Secret it does not render"
    # redis.existingSecret wins over redis.url, as auth.existingSecret does over auth.clients.
    both = render_value_set("redis-existing-secret", {"redis": {"url": "redis://ignored:6379"}})
    assert both.all("Secret") == [] and "ignored" not in "".join(both.manifests.values())
    # Egress to Redis on the default port, to any destination, with the rest of the policy.
    policy = render_value_set(
        "redis-existing-secret", {"networkPolicy": {"enabled": True, "egress": {"enabled": True}}}
    ).one("NetworkPolicy")
    (rule,) = [r for r in policy["spec"]["egress"] if only_tcp_port(r) == 6379]
    assert "to" not in rule
    custom = render_value_set("redis-existing-secret", {"networkPolicy": {"enabled": True, "egress": {
        "enabled": True, "redis": {"port": 6380, "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
    }}}).one("NetworkPolicy")  # fmt: skip
    (rule,) = [r for r in custom["spec"]["egress"] if only_tcp_port(r) == 6380]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_client_tokens_from_an_existing_secret() -> None:
    """thirdParty.clientTokens: the user's Secret mounted as a read-only directory (no subPath, so
    the kubelet updates the file), its key named by CPGW_CLIENT_TOKEN_FILE, re-read at the token
    file's interval. The chart renders no Secret of its own for it."""
    rendered = render_value_set("third-party")
    assert [s["metadata"]["name"] for s in rendered.all("Secret")] == [f"{FULLNAME}-tokens"]
    env = rendered.container_env()
    assert env["CPGW_CLIENT_TOKEN_FILE"] == "/etc/codepipeline-gateway/client-tokens/clients.toml"
    assert env["CPGW_TOKEN_FILE"] == "/etc/codepipeline-gateway/auth/tokens.toml"
    assert env["CPGW_TOKEN_FILE_POLL_INTERVAL"] == "1s"
    volumes = {v["name"]: v["secret"] for v in rendered.pod_spec["volumes"]}
    assert volumes["client-tokens"] == {
        "secretName": "partner-client-tokens", "defaultMode": 0o440,
        "items": [{"key": "clients.toml", "path": "clients.toml"}],
    }  # fmt: skip
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert set(mounts) == {"tokens", "client-tokens"}
    assert mounts["client-tokens"] == {
        "name": "client-tokens", "mountPath": "/etc/codepipeline-gateway/client-tokens", "readOnly": True,
    }  # fmt: skip
    assert "Third-party: client tokens held by the gateway, from Secret partner-client-tokens" in rendered.notes
    # The token file from values lets the partner workers call the third-party RPCs.
    (client,) = tomllib.loads(rendered.one("Secret")["stringData"]["tokens.toml"])["clients"]
    assert "PollForThirdPartyJobs" in client["allowed_rpcs"]
    # The default key.
    default_key = render_value_set("third-party", {"thirdParty": {"clientTokens": {"key": "client-tokens.toml"}}})
    assert default_key.container_env()["CPGW_CLIENT_TOKEN_FILE"] == (
        "/etc/codepipeline-gateway/client-tokens/client-tokens.toml"
    )
    only_secret = render(
        {"thirdParty": {"clientTokens": {"existingSecret": "p"}}, "auth": {"allowUnauthenticated": True}}
    )
    assert only_secret.container_env()["CPGW_CLIENT_TOKEN_FILE"].endswith("/client-tokens.toml")
    assert [v["secret"]["items"] for v in only_secret.pod_spec["volumes"]] == [
        [{"key": "client-tokens.toml", "path": "client-tokens.toml"}]
    ]


def test_client_token_file_interval_without_a_token_file() -> None:
    """The poll interval covers the client-token file too, so it is set with mTLS alone."""
    values = {
        "tls": {"enabled": True, "secretName": "gateway-tls", "clientAuth": {"enabled": True}},
        "auth": {"tokenFilePollInterval": "10s"},
        "thirdParty": {"clientTokens": {"existingSecret": "partner-client-tokens"}},
    }
    env = render(values).container_env()
    assert "CPGW_TOKEN_FILE" not in env
    assert env["CPGW_TOKEN_FILE_POLL_INTERVAL"] == "10s"
    assert "CPGW_CLIENT_TOKEN_FILE" in env
    del values["thirdParty"]
    assert "CPGW_TOKEN_FILE_POLL_INTERVAL" not in render(values).container_env()


@pytest.mark.parametrize(
    "value_set",
    [name for name in VALUE_SETS if not load_value_set(name).get("thirdParty", {}).get("clientTokens")],
)
def test_no_client_tokens_unless_a_secret_is_named(value_set: str) -> None:
    """Without thirdParty.clientTokens.existingSecret nothing is mounted for it and the gateway
    holds no client tokens, whatever the key says."""
    for override in ({}, {"thirdParty": {"clientTokens": {"key": "other.toml"}}}):
        rendered = render_value_set(value_set, override)
        assert "CPGW_CLIENT_TOKEN_FILE" not in rendered.container_env()
        assert "client-tokens" not in [v["name"] for v in rendered.pod_spec.get("volumes", [])]
        assert "client-tokens" not in [m["name"] for m in rendered.container.get("volumeMounts", [])]
        assert "Third-party" not in rendered.notes


def resource_attributes(text: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES read as the gateway's SDK reads it: `k=v` pairs split at commas."""
    pairs = [pair.split("=", 1) for pair in text.split(",")]
    assert all(len(pair) == 2 for pair in pairs), text
    attributes = {key.strip(): value.strip() for key, value in pairs}
    assert len(attributes) == len(pairs), f"a key is set twice: {text}"
    return attributes


def test_tracing() -> None:
    """tracing.*: the endpoint, ratio and service name in the ConfigMap, the resource attributes
    in the container's env (the kubelet expands the pod's name into them, and extraEnv's node
    name), and egress to the collector's pods."""
    rendered = render_value_set("tracing")
    values = load_value_set("tracing")
    data = rendered.one("ConfigMap", FULLNAME)["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4317"
    assert data["CPGW_TRACE_SAMPLING_RATIO"] == "1"
    assert data["OTEL_SERVICE_NAME"] == "ci-job-gateway"
    assert "OTEL_RESOURCE_ATTRIBUTES" not in data, "the kubelet expands $(NAME) in env values only"
    entries = rendered.container["env"]
    assert [e["name"] for e in entries] == ["NODE_NAME", "OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "OTEL_RESOURCE_ATTRIBUTES"]
    assert entries[1] == {
        "name": "OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }  # fmt: skip
    assert entries[2]["value"] == (
        "k8s.namespace.name=ci,k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),"
        "deployment.environment.name=staging,k8s.node.name=$(NODE_NAME),service.namespace=ci-platform"
    )
    env = rendered.container_env(pod=PodIdentity("gw-codepipeline-gateway-6f7b9c8d5-q8r2k", node_name="node-7"))
    assert resource_attributes(env["OTEL_RESOURCE_ATTRIBUTES"]) == {
        "k8s.namespace.name": NAMESPACE,
        "k8s.pod.name": "gw-codepipeline-gateway-6f7b9c8d5-q8r2k",
        "k8s.node.name": "node-7",
        "deployment.environment.name": "staging",
        "service.namespace": "ci-platform",
    }
    (rule,) = [r for r in rendered.one("NetworkPolicy")["spec"]["egress"] if only_tcp_port(r) == 4317]
    assert rule["to"] == values["networkPolicy"]["egress"]["otlp"]["to"]
    assert (
        "Traces:   OTLP/gRPC to http://otel-collector.observability.svc.cluster.local:4317, service ci-job-gateway,"
        " sampling ratio 1 (a caller's sampled traces are always kept)"
    ) in rendered.notes


@pytest.mark.parametrize(("ratio", "rendered"), [(0, "0"), (0.25, "0.25"), (1, "1"), (1.0, "1"), (0.001, "0.001")])
def test_tracing_sampling_ratio(ratio: float, rendered: str) -> None:
    """The ratio as a number the gateway parses (`f64`): no trailing `.0`, no quotes lost."""
    values = {"tracing": {"otlpEndpoint": "http://otel-collector:4317", "samplingRatio": ratio}}
    assert render_value_set("tokens", values).container_env()["CPGW_TRACE_SAMPLING_RATIO"] == rendered


def test_tracing_defaults_and_overrides() -> None:
    """With only an endpoint: the gateway's own service name (no OTEL_SERVICE_NAME), ratio 1, the
    two k8s attributes. Attributes set in values replace the chart's; egress goes to any
    destination on the port set."""
    endpoint = {"tracing": {"otlpEndpoint": "http://10.0.0.7:4317"}}
    rendered = render_value_set("tokens", merge(endpoint, {"networkPolicy": {"enabled": True, "egress": {"enabled": True}}}))
    env = rendered.container_env()
    assert "OTEL_SERVICE_NAME" not in env and env["CPGW_TRACE_SAMPLING_RATIO"] == "1"
    assert resource_attributes(env["OTEL_RESOURCE_ATTRIBUTES"]) == {
        "k8s.namespace.name": NAMESPACE, "k8s.pod.name": POD.name,
    }  # fmt: skip
    (rule,) = [r for r in rendered.one("NetworkPolicy")["spec"]["egress"] if only_tcp_port(r) == 4317]
    assert "to" not in rule
    assert "Traces:   OTLP/gRPC to http://10.0.0.7:4317, service codepipeline-gateway," in rendered.notes
    own = render_value_set("tokens", merge(endpoint, {
        "tracing": {"resourceAttributes": {"k8s.pod.name": "fixed", "k8s.namespace.name": "elsewhere", "team": "ci"}},
        "networkPolicy": {"enabled": True, "egress": {"enabled": True, "otlp": {"port": 14317}}},
    }))  # fmt: skip
    assert resource_attributes(own.container_env()["OTEL_RESOURCE_ATTRIBUTES"]) == {
        "k8s.pod.name": "fixed", "k8s.namespace.name": "elsewhere", "team": "ci",
    }  # fmt: skip
    ports = [p["port"] for rule in own.one("NetworkPolicy")["spec"]["egress"] for p in rule.get("ports", [])]
    assert 14317 in ports and 4317 not in ports
    # extraEnv comes first, so values can name its variables; the chart's own come after it.
    names = [e["name"] for e in render_value_set("networkpolicy", endpoint).container["env"]]
    assert names == ["HTTPS_PROXY", "NO_PROXY", "OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "OTEL_RESOURCE_ATTRIBUTES"]


@pytest.mark.parametrize("value_set", [name for name in VALUE_SETS if not load_value_set(name).get("tracing")])
def test_no_tracing_unless_an_endpoint_is_set(value_set: str) -> None:
    """Without tracing.otlpEndpoint no OTEL_* variable, no downward-API entry and no egress to a
    collector, whatever the other tracing values say."""
    settings = {"tracing": {"samplingRatio": 0.5, "serviceName": "gw", "resourceAttributes": {"team": "ci"}}}
    egress = {"networkPolicy": {"enabled": True, "egress": {"enabled": True}}}
    for override in ({}, settings, merge(settings, egress)):
        rendered = render_value_set(value_set, override)
        env = rendered.container_env()
        assert not [name for name in env if name.startswith("OTEL_") or "TRACE" in name], env
        assert not [e for e in rendered.container.get("env", []) if "fieldRef" in e.get("valueFrom", {})]
        for policy in rendered.all("NetworkPolicy"):
            ports = [p["port"] for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])]
            assert 4317 not in ports, ports
        assert "Traces:   off (set tracing.otlpEndpoint to export them)" in rendered.notes


def test_service_monitor() -> None:
    """ServiceMonitor is a Prometheus Operator CRD, so it is checked by hand here instead of
    against a schema."""
    rendered = render_value_set("servicemonitor")
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = rendered.gateway_service
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]] and endpoint["port"] == "metrics"
    assert (endpoint["path"], endpoint["scheme"]) == ("/metrics", "http")
    assert duration_seconds(endpoint["scrapeTimeout"]) <= duration_seconds(endpoint["interval"])
    assert endpoint["metricRelabelings"] == [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]
    env = rendered.container_env()
    assert env["CPGW_LISTEN"] == "0.0.0.0:8443" and env["CPGW_METRICS_LISTEN"] == "0.0.0.0:8080"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": 443, "metrics": 8080}
    assert rendered.deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"


def test_emulator_mode() -> None:
    rendered = render_value_set("emulator")
    env = rendered.container_env()
    assert env["CPGW_UPSTREAM"] == "emulator"
    assert env["CPGW_EMULATOR_DEMO_JOBS"] == "2" and env["CPGW_EMULATOR_ACCOUNT_ID"] == "210987654321"
    assert env["CPGW_EMULATOR_REDISPATCH_AFTER"] == "1m" and env["CPGW_EMULATOR_LATENCY"] == "10ms"
    # Only the gateway's own retries: the SDK's settings mean nothing on the emulator.
    assert sorted(name for name in env if name.startswith("CPGW_AWS_")) == [
        "CPGW_AWS_MAX_ATTEMPTS",
        "CPGW_AWS_OPERATION_TIMEOUT",
    ]
    assert rendered.all("ServiceAccount") == []
    assert rendered.pod_spec["serviceAccountName"] == "default"
    assert rendered.deployment["spec"]["replicas"] == 1
    assert "WARNING" not in rendered.notes
    assert "DemoBuilder" in rendered.notes
    assert "EmulatorAdminService/CreateJob" in rendered.notes


# The chart itself.


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: dict) -> str:
        return render(values).deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert checksum({"log": {"level": "debug"}}) != base
    assert checksum({"aws": {"region": "eu-west-1"}}) != base
    assert checksum({"tracing": {"otlpEndpoint": "http://otel-collector:4317"}}) != base
    assert checksum({"replicaCount": 5}) == base


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"tls": {"clientAuth": {"enabled": True}}}, "needs tls.enabled"),
        ({"upstream": "emulator", "autoscaling": {"enabled": True}}, "autoscaling cannot be used"),
        (
            {"auth": {"clients": [{"id": "a", "allowedRpcs": ["*"]}, {"id": "a", "allowedRpcs": ["*"]}]}},
            'the id "a" is used twice',
        ),
        (
            {
                "auth": {
                    "clients": [
                        {"id": "a", "tokenSha256": "AB" * 32, "allowedRpcs": ["*"]},
                        {"id": "b", "tokenSha256": "ab" * 32, "allowedRpcs": ["*"]},
                    ]
                }
            },
            'the tokenSha256 of "b" is used by another client',
        ),
    ],
)
def test_inconsistent_values_fail_the_render(values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_redis_without_a_url_fails_even_without_the_schema(tmp_path) -> None:
    """`helm install --skip-schema-validation` skips values.schema.json: the template's own check
    still refuses `rateLimit.backend: redis` with no URL source."""
    copy = shutil.copytree(CHART_DIR, tmp_path / CHART_DIR.name)
    (copy / "values.schema.json").unlink()
    message = "rateLimit.backend: redis needs redis.url or redis.existingSecret"
    with helm.Chart.load(copy) as chart:
        with pytest.raises(helm.HelmError, match=re.escape(message)):
            chart.render({"rateLimit": {"backend": "redis"}}, name=RELEASE, namespace=NAMESPACE)
        values = {"rateLimit": {"backend": "redis"}, "redis": {"existingSecret": "r"}}
        assert chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_pdb_percentages() -> None:
    spec = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"}}).one("PodDisruptionBudget")[
        "spec"
    ]
    assert spec["maxUnavailable"] == "25%"


def test_every_value_set_is_used_here() -> None:
    assert set(VALUE_SETS) == {
        "defaults", "existing-secret", "tokens", "tls", "mtls", "hpa-pdb", "networkpolicy", "servicemonitor",
        "emulator", "dashboards", "redis", "redis-existing-secret", "third-party", "tracing", "tuned",
    }  # fmt: skip
    assert load_value_set("defaults") == {}
