"""The one backoff every retry loop uses (storing a message, connecting to NATS, the launcher's restarts).

Written once, in the Python client package (``realtime_client.backoff``): the client must install without the
server's dependencies, while every server member already depends on this package, which depends on the
client. So the client's reconnects and the servers' retries share one implementation, not two copies."""

from realtime_client.backoff import Backoff

__all__ = ["Backoff"]
