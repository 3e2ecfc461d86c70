"""Metrics in the deploy files: every pod is scrapeable, compose's observability profile scrapes everyone."""

import json
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    DEPLOY,
    ROOT,
    by_kind,
    clean_env,
    compose_binary,
    compose_copy,
    compose_model,
    container,
    render,
    run,
)

APPS = ("echo", "rooms", "stats", "gateway")


def internal_port(workload: dict) -> int:
    """The named port ``internal``: /metrics answers there only (realtime.operator)."""
    ports = {p["name"]: p["containerPort"] for p in container(workload)["ports"]}
    return ports["internal"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_is_annotated_for_scraping_on_its_internal_port(tmp_path: Path, overlay: str) -> None:
    deployments = by_kind(render(tmp_path, overlay), "Deployment")
    for app in APPS:
        annotations = deployments[app]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", app
        assert annotations["prometheus.io/port"] == str(internal_port(deployments[app])), app
        assert annotations["prometheus.io/path"] == "/metrics", app


def test_observability_profile_adds_prometheus_scraping_every_service(tmp_path: Path) -> None:
    project = compose_copy(tmp_path)
    argv = [compose_binary(), "--project-directory", str(project), "-f", str(project / "compose.yaml")]
    argv += [
        "--env-file",
        str(ROOT / ".env.example"),
        "--profile",
        "observability",
        "config",
        "--format",
        "json",
    ]
    result = run(argv, cwd=project, env=clean_env(project))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    prometheus = services["prometheus"]
    assert any(v["target"] == "/etc/prometheus/prometheus.yml" for v in prometheus["volumes"])
    config = yaml.safe_load((DEPLOY / "observability" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert set(jobs) == set(APPS)
    for app in APPS:
        assert jobs[app]["names"] == [app]
        assert str(jobs[app]["port"]) == services[app]["environment"]["INTERNAL_PORT"], app


def test_prometheus_stays_out_of_the_default_stack(tmp_path: Path) -> None:
    assert "prometheus" not in compose_model(tmp_path)["services"]
