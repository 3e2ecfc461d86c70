"""The internal (operator) port in the rendered manifests (issue 25): every app names it ``internal``,
Prometheus scrapes it, nothing public routes to it (no Service, no Ingress), and the NetworkPolicies open
it to the monitoring namespace alone, which each overlay names in one place."""

from pathlib import Path

import pytest
import yaml

from tests.support.deploy import OVERLAYS, by_kind, container, deploy_copy, env_values, kustomize, render

APPS = ("echo", "rooms", "stats", "gateway")
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}  # what both overlays set


def internal_ports(objects: list[dict]) -> dict[str, int]:
    """App -> the number of its container port named ``internal``."""
    deployments = by_kind(objects, "Deployment")
    return {
        app: next(p["containerPort"] for p in container(deployments[app])["ports"] if p["name"] == "internal")
        for app in APPS
    }


def policy_rules(objects: list[dict]) -> list[tuple[str, dict]]:
    return [
        (name, rule)
        for name, policy in by_kind(objects, "NetworkPolicy").items()
        for rule in policy["spec"].get("ingress", [])
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_app_names_its_internal_port_and_prometheus_scrapes_it(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    deployments = by_kind(objects, "Deployment")
    for app, port in internal_ports(objects).items():
        c = container(deployments[app])
        env = env_values(c)
        assert env["INTERNAL_PORT"] == str(port), app
        assert env.get("INTERNAL_HOST", env["HOST"]) == "0.0.0.0", app  # Prometheus comes from another pod
        annotations = deployments[app]["spec"]["template"]["metadata"]["annotations"]
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
            str(port),
            "/metrics",
        )
        # the probes stay on the public port: load balancers and the kubelet ask there
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["port"] == "http", (app, probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_and_no_ingress_routes_to_the_internal_port(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    internal = set(internal_ports(objects).values())
    for name, service in by_kind(objects, "Service").items():
        for port in service["spec"]["ports"]:
            assert port.get("targetPort") != "internal", name
            assert port.get("targetPort") not in internal and port["port"] not in internal, name
    services = by_kind(objects, "Service")
    for name, ingress in by_kind(objects, "Ingress").items():
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        backends += (
            [ingress["spec"]["defaultBackend"]["service"]] if "defaultBackend" in ingress["spec"] else []
        )
        assert backends, name
        for backend in backends:
            port = backend["port"]
            assert port.get("name") != "internal" and port.get("number") not in internal, name
            assert [p["name"] for p in services[backend["name"]]["spec"]["ports"]] == ["http"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_monitoring_namespace_reaches_the_internal_port(tmp_path: Path, overlay: str) -> None:
    objects = render(tmp_path, overlay)
    internal = set(internal_ports(objects).values())
    opened = set()
    for name, rule in policy_rules(objects):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if "internal" in ports or internal & set(ports):
            assert ports == ["internal"], (name, ports)  # nothing else rides along
            assert rule["from"] == [{"namespaceSelector": {"matchLabels": MONITORING}}], name
            opened.add(name)
        else:
            assert rule.get("ports"), f"{name}: a rule without ports opens the internal port too"
    assert opened == set(APPS)


def test_the_overlay_names_the_monitoring_namespace_in_one_place(tmp_path: Path) -> None:
    kustomization = deploy_copy(tmp_path) / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    line = "          kubernetes.io/metadata.name: monitoring\n"
    assert text.count(line) == 1
    kustomization.write_text(text.replace(line, line.replace("monitoring", "observability")))
    result = kustomize(kustomization.parent)
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    selectors = [
        rule["from"][0]["namespaceSelector"]["matchLabels"]
        for _, rule in policy_rules(objects)
        if [p["port"] for p in rule["ports"]] == ["internal"]
    ]
    assert selectors == [{"kubernetes.io/metadata.name": "observability"}] * len(APPS)
