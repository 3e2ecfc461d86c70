"""The documentation site's generated reference (tools/docs/hooks.py): every settings class is in it, every
field with its description, a field without one stops the build; and the alert rules of the metrics
how-to are valid PromQL over metrics that exist. ``make docs`` builds the whole site with --strict."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import promql_parser
import pytest
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).parent.parent


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools/docs/hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def test_every_settings_class_in_the_code_is_in_the_reference() -> None:
    """A new settings class (a BaseSettings subclass anywhere in a deployable) must be added to SETTINGS."""
    listed = {path.partition(":")[2] for _, path, _ in hooks.SETTINGS}
    found = set()
    for folder in ("libs", "services", "gateway", "tools", "clients"):
        for path in (ROOT / folder).rglob("*.py"):
            if "/tests/" in path.as_posix() or "/.venv/" in path.as_posix():
                continue
            for name, bases in re.findall(r"^class (\w+)\(([^)]*)\):", path.read_text(), re.M):
                if any(base.strip().endswith("Settings") for base in bases.split(",")):  # mixins too
                    found.add(name)
    assert found == listed


def test_every_setting_is_on_the_generated_page_with_its_description() -> None:
    page = hooks.settings_page()
    for _, path, _ in hooks.SETTINGS:
        cls = hooks.load(path)
        for name, info in cls.model_fields.items():
            assert f"`{name.upper()}`" in page, name
            assert " ".join(info.description.split()).replace("|", "\\|") in page, name


def test_a_setting_without_a_description_stops_the_build() -> None:
    class Described(BaseSettings):
        model_config = SettingsConfigDict(use_attribute_docstrings=True)

        by_docstring: int = 1
        """Described by a docstring."""
        by_field: int = Field(default=2, ge=1, description="Described by Field(description=...).")
        undescribed: int = 3

    with pytest.raises(hooks.MissingDescription, match=r"Described\.undescribed"):
        hooks.settings_rows(Described, None)
    del Described.model_fields["undescribed"]
    rows = hooks.settings_rows(Described, None)
    assert [row[0] for row in rows] == ["`BY_DOCSTRING`", "`BY_FIELD`"]
    assert rows[1][1] == "`int` (>= 1)" and rows[1][3] == "Described by Field(description=...)."


def test_the_build_fails_on_a_missing_description(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through MkDocs' own error: the hook raises PluginError, which stops ``mkdocs build``."""
    from mkdocs.config import load_config
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import Files

    monkeypatch.setattr(hooks, "SETTINGS", [*hooks.SETTINGS, ("x", "tests.test_docs_site:Undescribed", "x")])
    config = load_config(str(ROOT / "mkdocs.yml"))
    with pytest.raises(PluginError, match=r"Undescribed\.value"):
        hooks.on_files(Files([]), config)


class Undescribed(BaseSettings):
    value: int = 1


def test_the_other_reference_pages_are_generated_from_their_sources() -> None:
    websocket = hooks.websocket_page()
    doc = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    for channel in doc["channels"].values():
        assert f"## `{channel['address']}`" in websocket
    assert "`since`" in websocket and "`welcome`" in websocket
    http = hooks.http_api_page()
    assert (
        "## `POST /api/rooms/{room_id}/messages`" in http and "## `GET /api/rooms/{room_id}/messages`" in http
    )
    codes = hooks.close_codes_page()
    from realtime.close_codes import FINAL, RECONNECT, CloseCode

    for code in CloseCode:
        assert f"| `{int(code)}` | `{code.name}` |" in codes
    for code in RECONNECT:
        assert f"| `{int(code)}` | `{code.name}` | reconnect" in codes
    for code in FINAL:
        assert f"| `{int(code)}` | `{code.name}` | final" in codes


def test_the_example_alert_rules_parse_and_name_real_metrics() -> None:
    """docs/howto/alert-rules.yml, shown on the metrics page: Prometheus rule-file shape, every expression
    parsed by a PromQL parser (no promtool on PyPI), every metric one that realtime.metrics defines."""
    rules = yaml.safe_load((ROOT / "docs/howto/alert-rules.yml").read_text())
    source = (ROOT / "libs/realtime/src/realtime/metrics.py").read_text()
    defined = set(re.findall(r'"(realtime_[a-z_]+)"', source))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert alerts
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["labels"]["severity"] in ("page", "ticket"), rule
        assert rule["annotations"]["summary"], rule
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        for name in re.findall(r"\brealtime_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
            assert base in defined, f"{rule['alert']}: no metric {name} in realtime.metrics"
    with pytest.raises(Exception):  # noqa: B017 - the parser's own error type
        promql_parser.parse("sum(rate(realtime_messages_delivered_total[5m])")
