"""``python -m devstack`` (``make run``): start everything, print the URLs, restart what dies, stop all on
Ctrl-C/SIGTERM."""

import logging
import os
import signal
import sys
import threading

from devstack.settings import LauncherSettings
from devstack.stack import Stack, StackConfig, StackError, die_with_parent, parse_scale


def config_from_env() -> StackConfig:
    settings = LauncherSettings()
    return StackConfig(
        scale=parse_scale(settings.scale),
        gateway_port=settings.port,
        nats_port=settings.nats_port,
        nats_monitor_port=settings.nats_monitor_port,
        nats_cluster_port=settings.nats_cluster_port,
        log_dir=settings.stack_log_dir,
        echo_logs=not settings.stack_quiet,
        fixed_ports=not settings.stack_free_ports,
        unix_sockets=settings.stack_unix_sockets,
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
