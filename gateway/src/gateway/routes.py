"""Which upstream serves a WebSocket path."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str  # "/echo" or "/ws/{room_id}": a ``{name}`` segment matches any one non-empty segment
    upstream: str

    def matches(self, path: str) -> bool:
        want, have = self.pattern.strip("/").split("/"), path.strip("/").split("/")
        if len(want) != len(have):
            return False
        return all(
            (w.startswith("{") and w.endswith("}") and h) or w == h for w, h in zip(want, have, strict=True)
        )


class RouteTable:
    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = [Route(pattern, upstream) for pattern, upstream in routes.items()]

    def upstream_for(self, path: str) -> str | None:
        """The upstream name for ``path`` (no query string), or None: the client then sees 4004."""
        for route in self.routes:
            if route.matches(path):
                return route.upstream
        return None
