"""``make asyncapi``: tools/asyncapi/validate.mjs (``@asyncapi/parser``, pinned by its lock) takes
docs/asyncapi.yaml and refuses a broken document, errors and warnings alike (the CLI's
``--fail-severity=warn``)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
VALIDATE = ROOT / "tools/asyncapi/validate.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    assert binary, "make test needs Node.js 20+ (make asyncapi)"
    # Installs the pinned parser from the lock when it is missing (make's stamp: only when the lock changed).
    subprocess.run(
        ["make", "--no-print-directory", "tools/asyncapi/node_modules/.installed"],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return binary


def validate(node: str, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(VALIDATE), str(document)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_document_is_valid(node: str) -> None:
    result = validate(node, ROOT / "docs/asyncapi.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid AsyncAPI document" in result.stdout


def test_a_broken_document_fails(node: str, tmp_path: Path) -> None:
    """An operation that sends a message its channel does not carry: an error."""
    doc = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    operation = next(iter(doc["operations"].values()))
    operation["channel"] = {"$ref": "#/channels/stats"} if "stats" in doc["channels"] else {"$ref": "#/x"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = validate(node, broken)
    assert result.returncode == 1, result.stdout
    assert " error " in result.stdout and "not valid" in result.stderr


def test_a_warning_fails_too(node: str, tmp_path: Path) -> None:
    """A document whose only findings are warnings (an AsyncAPI 2 document without ``id``, contact or
    license: the parser's recommended rules) is refused as well."""
    document = tmp_path / "warnings.yaml"
    document.write_text(
        "asyncapi: 2.6.0\n"
        "info: {title: t, version: 1.0.0, description: d}\n"
        "servers: {s: {url: 'ws://127.0.0.1:1', protocol: ws}}\n"
        "channels: {/a: {subscribe: {message: {payload: {type: string}}}}}\n"
    )
    result = validate(node, document)
    assert result.returncode == 1, result.stdout
    assert " warning " in result.stdout and " error " not in result.stdout
