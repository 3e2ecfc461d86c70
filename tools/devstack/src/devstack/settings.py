"""The launcher's own settings (``make run``), from the environment. Every other variable in the
environment (``ROOM_PASSWORDS``, ``PULSE_INTERVAL``, ...) passes through to every service."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    """What ``python -m devstack`` reads; the docs' settings reference is generated from this class."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", use_attribute_docstrings=True)

    port: int = Field(default=8000, ge=1, le=65535)
    """The gateway's port."""
    scale: str = "echo=1 rooms=1 stats=1"
    """Replicas per service, e.g. `rooms=2 stats=2` (spaces or commas; a service not named runs once);
    replica *i* listens on the service's base port + *i* - 1. `nats=3` (or 5) starts a JetStream cluster of
    that many nodes on loopback instead of one NATS server."""
    nats_port: int = Field(default=4222, ge=1, le=65535)
    """The local NATS server's client port (JetStream on, data in `<STACK_LOG_DIR>/jetstream`, kept between
    runs)."""
    nats_monitor_port: int = Field(default=8222, ge=1, le=65535)
    """The local NATS server's monitoring port (`/healthz`, `/varz`); cluster node *i*: this + *i* - 1."""
    nats_cluster_port: int = Field(default=6222, ge=1, le=65535)
    """With `SCALE=nats=N`: node *i*'s route (cluster) port is this + *i* - 1."""
    stack_log_dir: Path = Path(".stack/logs")
    """One log file per process (and the Unix sockets); a run first removes the `*.log` and `*.sock` an
    earlier run left there."""
    stack_quiet: bool = False
    """`1`: stop printing the processes' log lines (they are still written to `STACK_LOG_DIR`)."""
    stack_free_ports: bool = False
    """`1`: put every service replica on a free port instead of its base port."""
    stack_unix_sockets: bool = True
    """On by default (every process runs on this machine): the gateway reaches every service over a Unix
    socket in the log folder, health checks stay on TCP. `0` puts the gateway's upstreams on loopback TCP."""
    stack_keep_logs: bool = False
    """Tests: `1` keeps each test stack's temporary log folder (to read after a failed run)."""
