"""MkDocs hook (mkdocs.yml ``hooks:``): the reference pages, generated from the code as the site builds.

Nothing in them is written by hand, so nothing is written twice:

- ``reference/settings.md``: every field of every settings class (``SETTINGS``) with its environment
  variable, type, default and description; a field without a description fails the build;
- ``reference/websocket.md``: the WebSocket protocol from ``docs/asyncapi.yaml``;
- ``reference/http-api.md``: the HTTP API from the rooms service's OpenAPI schema;
- ``reference/close-codes.md``: the close codes from ``realtime.close_codes``.

The pages exist only in the build (``File.generated``); ``python tools/docs/hooks.py DIR`` writes them to
DIR to read them without MkDocs.
"""

import enum
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]

# (title, class path, what reads it). A class's inherited fields are listed once, under the first class
# that has them (the shared base), unless the subclass overrides the field's default or description.
SETTINGS = [
    ("Every service and the gateway", "realtime.settings:ServiceSettings", "echo, rooms, stats, gateway"),
    ("Gateway", "gateway.settings:GatewaySettings", "the gateway"),
    ("Rooms", "rooms_service.settings:RoomsSettings", "the rooms service"),
    ("Stats", "stats_service.settings:StatsSettings", "the stats service"),
    ("Echo", "echo_service.settings:EchoSettings", "the echo service"),
    (
        "The launcher (`make run`)",
        "devstack.settings:LauncherSettings",
        "`python -m devstack` (every other variable in its environment passes through to every service)",
    ),
]


class MissingDescription(ValueError):
    pass


def load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# --- settings --------------------------------------------------------------------------------------
def type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = repr(annotation)
    text = re.sub(r"typing\.Annotated\[(.*), NoDecode\]", r"\1", text)
    text = re.sub(r"\b(typing|pathlib|pydantic\.types|pydantic)\.", "", text)
    text = text.replace("NoneType", "None").replace("Literal[", "one of [").replace(" | ", " or ")
    return text


def constraints(info: FieldInfo) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = []
    for meta in info.metadata:
        for attr, sign in signs.items():
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(found)


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(computed at start: see the description)"
    value = info.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "empty"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`" if value else f"`{json.dumps(value)}` (empty)"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_rows(cls: type[BaseModel], parent: type[BaseModel] | None) -> list[list[str]]:
    rows = []
    missing = []
    for name, info in cls.model_fields.items():
        if not info.description:
            missing.append(f"{cls.__name__}.{name}")
            continue
        inherited = parent is not None and name in parent.model_fields
        if inherited:
            base = parent.model_fields[name]
            if base.description == info.description and default_text(base) == default_text(info):
                continue
        kind = type_name(info.annotation)
        limits = constraints(info)
        rows.append(
            [
                f"`{name.upper()}`",
                f"`{kind}`" + (f" ({limits})" if limits else ""),
                default_text(info),
                cell(info.description),
            ]
        )
    if missing:
        raise MissingDescription(
            "settings without a description (a docstring under the field, or Field(description=...)): "
            + ", ".join(missing)
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_page() -> str:
    base = load(SETTINGS[0][1])
    out = [
        "# Settings\n",
        "Every setting is an environment variable (pydantic-settings, case-insensitive; empty values are "
        "ignored). This page is generated from the settings classes as the site builds: the name, the type "
        "(with its bounds), the default and the description are the code's. A service reads the settings "
        "of the first table and its own; a value out of bounds stops it at start with the setting named.\n",
    ]
    for title, path, reader in SETTINGS:
        cls = load(path)
        parent = base if cls is not base and issubclass(cls, base) else None
        rows = settings_rows(cls, parent)
        module, _, name = path.partition(":")
        out.append(f"## {title}\n")
        read_by = f"Read by {reader}: `{name}` in `{module}`."
        if parent is not None:
            read_by += " The settings of the first table apply too; those listed here are its own or differ."
        out.append(read_by + "\n")
        out.append(table(["variable", "type", "default", "description"], rows))
    out.append("## Outside the settings classes\n")
    out.append(
        "Read from the environment by a library before any settings class is made, so not a field: "
        "`PROMETHEUS_MULTIPROC_DIR` (default empty), used with `GATEWAY_WORKERS` > 1: the folder where every "
        "worker writes its metric values (emptied at start; empty: a temporary folder). One scrape of any "
        "worker sums them all ([metrics](../howto/metrics.md)).\n"
    )
    return "\n".join(out)


# --- JSON schema (AsyncAPI payloads, OpenAPI bodies) --------------------------------------------------
def resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def ref_name(node: dict[str, Any]) -> str | None:
    return node["$ref"].rsplit("/", 1)[-1] if isinstance(node, dict) and "$ref" in node else None


def schema_type(root: dict[str, Any], node: dict[str, Any]) -> str:
    name = ref_name(node)
    if name:
        target = resolve(root, node)
        if target.get("type") == "object" or "properties" in target:
            return f"[{name}](#{name.lower()})"
        node = target
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " or ".join(schema_type(root, option) for option in node[key])
    kind = node.get("type", "any")
    if kind == "array":
        return "array of " + schema_type(root, node.get("items", {}))
    if isinstance(kind, list):
        kind = " or ".join(kind)
    bounds = []
    for key, sign in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("minLength", "length >="),
        ("maxLength", "length <="),
    ):
        if key in node and not (key == "maximum" and node[key] > 2**53):
            bounds.append(f"{sign} {node[key]}")
    if "pattern" in node:
        bounds.append(f"pattern `{node['pattern']}`")
    return f"{kind}" + (f" ({', '.join(bounds)})" if bounds else "")


def fields_table(root: dict[str, Any], schema: dict[str, Any]) -> str:
    schema = resolve(root, schema)
    properties = schema.get("properties", {})
    if not properties:
        return f"A {schema_type(root, schema)}.\n"
    required = set(schema.get("required", []))
    rows = [
        [
            f"`{name}`",
            schema_type(root, prop),
            "yes" if name in required else "no",
            cell(
                resolve(root, prop).get("description", "") if "$ref" in prop else prop.get("description", "")
            ),
        ]
        for name, prop in properties.items()
    ]
    extra = "" if schema.get("additionalProperties", True) is not False else "No other field is allowed.\n"
    return table(["field", "type", "required", "description"], rows) + ("\n" + extra if extra else "")


# --- the WebSocket protocol (AsyncAPI) ------------------------------------------------------------
def websocket_page() -> str:
    doc = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    out = [
        "# WebSocket protocol\n",
        f"Generated from [`docs/asyncapi.yaml`](../asyncapi.yaml) (AsyncAPI {doc['asyncapi']}) as the site "
        "builds; `make asyncapi` validates that document and `tests/test_asyncapi.py` checks real frames "
        "from the running stack against its schemas. *Client sends* and *client receives* are from the "
        "client's side. What each close code means and whether to reconnect: "
        "[close codes](close-codes.md).\n",
        doc["info"]["description"],
    ]
    for name, server in doc.get("servers", {}).items():
        address = f"{server['protocol']}://{server['host']}"
        out.append(f"**Server `{name}`**: `{address}`. {cell(server.get('description', ''))}\n")
    by_channel: dict[str, dict[str, list[str]]] = {}
    for operation in doc["operations"].values():
        channel = ref_name(operation["channel"]) or ""
        side = "receives" if operation["action"] == "send" else "sends"
        for message in operation.get("messages", []):
            by_channel.setdefault(channel, {}).setdefault(side, []).append(ref_name(message) or "")
    for key, channel in doc["channels"].items():
        out.append(f"## `{channel['address']}`: {channel.get('title', key)}\n")
        out.append(channel.get("description", "") + "\n")
        for pname, param in channel.get("parameters", {}).items():
            out.append(f"Path parameter `{pname}`: {cell(param.get('description', ''))}\n")
        query = channel.get("bindings", {}).get("ws", {}).get("query")
        if query:
            out.append("### Query parameters\n")
            out.append(fields_table(doc, query))
        sides = by_channel.get(key, {})
        out.append("### Messages\n")
        rows = []
        for mkey, mref in channel.get("messages", {}).items():
            message = resolve(doc, mref)
            side = (
                " and ".join(f"client {s}" for s in ("sends", "receives") if mkey in sides.get(s, [])) or "-"
            )
            rows.append(
                [
                    f"[`{mkey}`](#{key}-{mkey})",
                    side,
                    message.get("contentType", ""),
                    cell(message.get("title", "")),
                ]
            )
        out.append(table(["message", "direction", "content type", "what"], rows))
        for mkey, mref in channel.get("messages", {}).items():
            message = resolve(doc, mref)
            out.append(f'<a id="{key}-{mkey}"></a>\n\n#### `{mkey}`: {message.get("title", "")}\n')
            if message.get("description"):
                out.append(message["description"] + "\n")
            out.append(fields_table(doc, message.get("payload", {})))
            for example in message.get("examples", [])[:1]:
                payload = example.get("payload")
                text = payload if isinstance(payload, str) else json.dumps(payload)
                out.append(f"Example: `{text}`\n")
    return "\n".join(out)


# --- the HTTP API (OpenAPI) ----------------------------------------------------------------------
def openapi_schema() -> dict[str, Any]:
    from rooms_service.app import create_app
    from rooms_service.settings import RoomsSettings

    return create_app(RoomsSettings(bus_url="memory://")).openapi()


def http_api_page() -> str:
    spec = openapi_schema()
    out = [
        "# HTTP API\n",
        "The rooms service's HTTP API, generated from its OpenAPI schema as the site builds. The gateway "
        "forwards plain HTTP under `/api/` to the rooms replicas (`HTTP_ROUTES`), so these paths are served "
        "at the gateway's address; a running gateway shows the same schema at `/docs` (Swagger UI) and "
        "`/openapi.json`. How to use it: [publish from a backend](../howto/publish.md).\n",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            out.append(f"## `{method.upper()} {path}`\n")
            out.append(f"**{op.get('summary', '')}.** {op.get('description', '')}\n")
            if op.get("security"):
                schemes = ", ".join(name for entry in op["security"] for name in entry)
                how = "`Authorization: Bearer <key>`, a key from `PUBLISH_API_KEYS`"
                out.append(f"Authentication: {schemes} ({how}).\n")
            params = op.get("parameters", [])
            if params:
                rows = [
                    [
                        f"`{p['name']}`",
                        p["in"],
                        schema_type(spec, p.get("schema", {})),
                        "yes"
                        if p.get("required")
                        else f"no (default `{p.get('schema', {}).get('default')}`)",
                        cell(p.get("description", "")),
                    ]
                    for p in params
                ]
                out.append(table(["parameter", "in", "type", "required", "description"], rows))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append("Request body (JSON):\n")
                out.append(fields_table(spec, body))
            rows = []
            for status, answer in sorted(op.get("responses", {}).items()):
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                rows.append(
                    [status, schema_type(spec, schema) if schema else "", cell(answer.get("description", ""))]
                )
            out.append("Answers:\n")
            out.append(table(["status", "body", "when"], rows))
    out.append("## Schemas\n")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out.append(f'<a id="{name.lower()}"></a>\n\n### {name}\n')
        if schema.get("description"):
            out.append(cell(schema["description"]) + "\n")
        out.append(fields_table(spec, schema))
    return "\n".join(out)


# --- close codes (realtime.close_codes) -----------------------------------------------------------------
def member_comments(module: Any) -> dict[str, str]:
    """The trailing comment of each ``NAME = value  # comment`` line in the module's source."""
    comments = {}
    source = Path(module.__file__).read_text()
    for line in source.splitlines():
        match = re.match(r"^\s+([A-Z_]+) = \d+\s*#\s*(.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def close_codes_page() -> str:
    codes = importlib.import_module("realtime.close_codes")
    comments = member_comments(codes)
    rows = []
    for code in codes.CloseCode:
        if code in codes.RECONNECT:
            client = "reconnect (with backoff) and resume"
        elif code in codes.FINAL:
            client = "final: do not retry"
        elif code == 1000:
            client = "the session is over"
        else:
            client = "never sent: a client reports it itself"
        rows.append([f"`{int(code)}`", f"`{code.name}`", client, cell(comments.get(code.name, ""))])
    intro = (
        "# Close codes\n\n"
        "Generated from `realtime.close_codes` (`CloseCode`, `RECONNECT`, `FINAL`) as the site builds: the "
        "one table in code. The services and the gateway close with these names; the Python client "
        "(`realtime_client`), `/static/realtime.js` and `docs/asyncapi.yaml` (`x-close-codes`) follow the "
        "same reconnect/final split, and tests hold them to it. The gateway passes every upstream close "
        "code and reason through unchanged. Which reason comes with which code, case by case: "
        "[delivery guarantees](../explanation/delivery.md#close-codes).\n\n"
        "A client must *see* the code: every refusal is sent after accepting the handshake (a close before "
        "accept becomes HTTP 403, which a browser reports as 1006). `1005` and `1006` are never sent: a "
        "client reports them itself (no code in the close frame; the connection dropped).\n"
    )
    return intro + "\n" + table(["code", "name", "a client", "when"], rows)


PAGES = {
    "reference/settings.md": settings_page,
    "reference/websocket.md": websocket_page,
    "reference/http-api.md": http_api_page,
    "reference/close-codes.md": close_codes_page,
}


# --- MkDocs ---------------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    for src_uri, render in PAGES.items():
        try:
            content = render()
        except MissingDescription as exc:
            raise PluginError(str(exc)) from exc
        existing = files.get_file_from_path(src_uri)
        if existing is not None:
            raise PluginError(f"docs/{src_uri} is generated: remove the hand-written file")
        files.append(File.generated(config, src_uri, content=content))
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".stack/reference")
    for src_uri, render in PAGES.items():
        path = target / src_uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
        print(path)
