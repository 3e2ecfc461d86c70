"""``python -m devstack`` (``make run``): start everything, print the URLs, restart what dies, stop all on
Ctrl-C/SIGTERM."""

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from devstack.stack import Stack, StackConfig, StackError, die_with_parent, parse_scale


def config_from_env() -> StackConfig:
    env = os.environ
    return StackConfig(
        scale=parse_scale(env.get("SCALE", "")),
        gateway_port=int(env.get("PORT", "8000")),
        nats_port=int(env.get("NATS_PORT", "4222")),
        nats_monitor_port=int(env.get("NATS_MONITOR_PORT", "8222")),
        nats_cluster_port=int(env.get("NATS_CLUSTER_PORT", "6222")),
        log_dir=Path(env.get("STACK_LOG_DIR", ".stack/logs")),
        echo_logs=env.get("STACK_QUIET", "") in ("", "0", "false"),
        fixed_ports=env.get("STACK_FREE_PORTS", "") in ("", "0", "false"),
        unix_sockets=env.get("STACK_UNIX_SOCKETS", "") not in ("", "0", "false"),
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parent = os.getppid()
    die_with_parent()  # `make run` killed outright must not leave the stack running
    if os.getppid() != parent:
        return 1  # the parent was gone before the request took effect
    try:
        stack = Stack(config_from_env())
    except (ValueError, StackError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stack.start()
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    print("\nrealtime stack is up:", *stack.describe(), "Ctrl-C stops everything.\n", sep="\n", flush=True)
    # A process that exits unexpectedly is restarted with backoff; only Ctrl-C/SIGTERM ends the stack.
    stack.supervise(stopping)
    print("\nstopping...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
