"""The gateway's OpenAPI schema (``/openapi.json``) and Swagger UI (``/docs``), forwarded APIs included.

The schema is the gateway's own, plus, for each ``HTTP_ROUTES`` prefix, the paths under that prefix from
the upstream's own ``/openapi.json`` (those are the ones a client can reach through the gateway) and the
upstream's ``components`` (schemas, security schemes: the bearer scheme shows as in the service's docs).
It is fetched from a reachable replica with a short deadline and kept for ``SCHEMA_TTL`` seconds. When no
replica answers, the gateway's own schema says so in ``info.description`` and is kept for ``RETRY_TTL``.
"""

import asyncio
import contextlib
import copy
import json
import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.http_forward import Forwarder
from gateway.upstream_http import Outgoing, UpstreamError, UpstreamResponse
from gateway.upstreams import Address, UpstreamPool, shown

logger = logging.getLogger("gateway.http")

SCHEMA_TTL = 30.0  # seconds a merged schema is served before it is fetched again
RETRY_TTL = 5.0  # ... and one that misses an upstream's part
FETCH_DEADLINE = 3.0  # seconds for one upstream's schema, over all its replicas
FETCH_TIMEOUT = 2.0  # seconds, one replica
MAX_SCHEMA = 4 * 1024 * 1024  # bytes of an upstream's schema read at most


class ApiDocs:
    def __init__(self, app: FastAPI, forwarder: Forwarder, routes: dict[str, UpstreamPool]) -> None:
        self.app = app
        self.forwarder = forwarder
        self.routes = routes
        self._schema: dict[str, Any] | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def mount(self) -> None:
        """``GET /openapi.json`` and ``GET /docs`` (the app is made with ``openapi_url=None``)."""
        title = self.app.title

        @self.app.get("/openapi.json", include_in_schema=False)
        async def openapi() -> JSONResponse:
            return JSONResponse(await self.schema())

        @self.app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - Swagger UI")

    async def schema(self) -> dict[str, Any]:
        if self._schema is not None and time.monotonic() < self._expires:
            return self._schema
        async with self._lock:  # one fetch at a time; the others get its result
            if self._schema is None or time.monotonic() >= self._expires:
                schema, complete = await self._build()
                self._schema = schema
                self._expires = time.monotonic() + (SCHEMA_TTL if complete else RETRY_TTL)
            return self._schema

    async def _build(self) -> tuple[dict[str, Any], bool]:
        schema = copy.deepcopy(self.app.openapi())
        notes: list[str] = []
        complete = True
        for prefix, pool in self.routes.items():
            theirs = await self._fetch(pool)
            if theirs is None:
                complete = False
                notes.append(
                    f"The HTTP API under `{prefix}` ({pool.name}) is not shown: no replica answered "
                    "for its schema. It is asked again within seconds."
                )
                continue
            clashes = merge(schema, theirs, prefix)
            notes.append(f"Requests under `{prefix}` are forwarded to {pool.name}.")
            if clashes:
                notes.append(f"Components named alike elsewhere, kept from the first: {', '.join(clashes)}.")
        info = schema.setdefault("info", {})
        info["description"] = "\n\n".join([info["description"], *notes] if info.get("description") else notes)
        return schema, complete

    async def _fetch(self, pool: UpstreamPool) -> dict[str, Any] | None:
        """The upstream's schema from the first replica that gives one (a GET: safe to ask another)."""
        try:
            async with asyncio.timeout(FETCH_DEADLINE):
                for address in pool.candidates():
                    found = await self._fetch_from(pool, address)
                    if found is not None:
                        return found
        except TimeoutError:
            logger.info("schema of %s: no replica answered within %.0f s", pool.name, FETCH_DEADLINE)
        return None

    async def _fetch_from(self, pool: UpstreamPool, address: Address) -> dict[str, Any] | None:
        where = f"{pool.name} {shown(address)}"
        request = Outgoing(b"GET", b"/openapi.json", [(b"accept", b"application/json")])
        try:
            response = await self.forwarder.send_to(pool, address, request, FETCH_TIMEOUT)
            try:
                body = await _read(response)
            finally:
                await response.aclose()
        except UpstreamError as exc:  # unreachable (then marked down by send_to), timed out, cut off
            logger.info("schema of %s: %s", where, str(exc) or type(exc).__name__)
            return None
        found = None
        if response.status_code == 200 and body is not None:
            with contextlib.suppress(ValueError):
                found = json.loads(body)
        if not isinstance(found, dict):
            logger.info("schema of %s: HTTP %d, not a JSON object", where, response.status_code)
            return None
        return found


async def _read(response: UpstreamResponse) -> bytes | None:
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > MAX_SCHEMA:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def merge(schema: dict[str, Any], theirs: dict[str, Any], prefix: str) -> list[str]:
    """Add ``theirs``' paths under ``prefix`` and its components to ``schema``; returns the components
    ``schema`` already had under the same name with other contents (the first one is kept)."""
    paths = schema.setdefault("paths", {})
    for path, item in (theirs.get("paths") or {}).items():
        if path.startswith(prefix):
            paths.setdefault(path, item)
    clashes = []
    for kind, items in (theirs.get("components") or {}).items():
        mine = schema.setdefault("components", {}).setdefault(kind, {})
        for name, value in items.items():
            if mine.setdefault(name, value) != value:
                clashes.append(f"{kind}/{name}")
    known = {tag.get("name") for tag in schema.get("tags", [])}
    for tag in theirs.get("tags") or []:
        if tag.get("name") not in known:
            schema.setdefault("tags", []).append(tag)
            known.add(tag.get("name"))
    return clashes
