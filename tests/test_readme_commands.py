"""Every shell command in README.md and in the documentation site (docs/**/*.md) works as written on a
fresh clone (after ``make install``).

Commands come from the ``sh`` code blocks (line by line, comments dropped) and from inline code that
starts like a command (``make ...``, ``.venv/bin/...``, ``kubectl ...``, ``docker ...``, ``bash ...``). Each
runs in a copy of the tracked files (a fresh clone of this tree) with this checkout's ``.venv`` and
``.tools``: as written when it can run offline and quickly, or as its offline equivalent (``make -n``,
``kubectl kustomize`` for ``kubectl apply -k``, ``compose config`` for ``compose up``, ``--help`` for an
interactive client). What needs a running stack, a container engine, a cluster or root is skipped by name,
with the reason, so ``pytest -ra`` lists it. A command no rule knows fails the test: add a rule.
The tutorial's commands (docs/tutorial/chat-backend.md) run for real, in order, against a stack of their
own (``test_the_tutorial_runs_as_written``).
"""

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from realtime.testing import free_port

from tests.conftest import make_stack
from tests.support.deploy import ROOT, compose_binary, kubectl

README = ROOT / "README.md"
# Every page of the site with commands in it (the reference pages are generated: they hold none).
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
TUTORIAL = ROOT / "docs/tutorial/chat-backend.md"
TIMEOUT = 120
COMMAND_WORDS = ("make", "kubectl", "docker", "bash", "python", "python3", "cd", "cp", "printf")
ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    text: str  # as written in the README or the page
    setup: list[str] = field(default_factory=list)  # earlier `cd`/`cp` lines of the same block
    page: Path = README  # where it is written (the first page, when several have it)

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def env(self) -> dict[str, str]:
        env = {}
        for word in self.words:
            if not ENV_WORD.match(word):
                break
            name, _, value = word.partition("=")
            env[name] = value
        return env

    @property
    def argv(self) -> list[str]:
        return self.words[len(self.env) :]


def page_commands(page: Path) -> list[Command]:
    text = page.read_text()
    commands: list[Command] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        setup: list[str] = []
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            command = shlex.join(words) if "|" not in words and "&&" not in words else line.split(" #")[0]
            commands.append(Command(command.strip(), list(setup), page))
            if words[0] in ("cd", "cp"):
                setup.append(command)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = span.split()
        first = next((w for w in words if not ENV_WORD.match(w)), "")
        if len(words) > 1 and (first in COMMAND_WORDS or first.startswith((".venv/bin/", "../"))):
            commands.append(Command(span, page=page))
    return commands


def all_commands() -> list[Command]:
    unique: dict[str, Command] = {}
    for page in PAGES:
        for command in page_commands(page):
            unique.setdefault(command.text, command)
    return list(unique.values())


def documented(text: str) -> bool:
    return any(text in page.read_text() for page in PAGES)


COMMANDS = all_commands()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this tree (what a fresh clone holds), with this checkout's installed tools."""
    target = tmp_path_factory.mktemp("readme") / "clone"
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=TIMEOUT
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for installed in (".venv", ".tools"):
        (target / installed).symlink_to(ROOT / installed)
    return target


@dataclass
class Context:
    clone: Path
    cwd: Path

    def sh(self, script: str, *, env: dict[str, str] | None = None, stdin: str = "") -> str:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.cwd,
            env=os.environ | (env or {}),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{script!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def python(self, code: str, env: dict[str, str]) -> str:
        return self.sh(f"{self.clone}/.venv/bin/python -c {shlex.quote(code)}", env=env)


def skip(reason: str) -> Callable[[Context, Command], None]:
    def rule(ctx: Context, command: Command) -> None:
        pytest.skip(reason)

    return rule


def run_as_written(ctx: Context, command: Command) -> None:
    ctx.sh(command.text)


def make_dry_run(ctx: Context, command: Command) -> None:
    """``make -n`` on each target: the target exists and its recipe expands (nothing is installed or run);
    the launcher and the rooms service read the settings the command sets."""
    targets = command.argv[1:] or ["help"]
    for target in targets:
        output = ctx.sh(f"make -n {shlex.quote(target)}", env=command.env)
        assert output.strip(), target
    if "run" in targets and command.env:
        ctx.python("from devstack.__main__ import config_from_env; config_from_env()", command.env)
        check_room_passwords(ctx, command.env)
        check_api_keys(ctx, command.env)


HASH_PLACEHOLDER = "pbkdf2_sha256$600000$...$..."


def check_room_passwords(ctx: Context, env: dict[str, str]) -> None:
    if "ROOM_PASSWORDS" not in env:
        return
    value = env["ROOM_PASSWORDS"]
    if HASH_PLACEHOLDER in value:  # "paste the printed hash": paste one
        printed = ctx.sh(f"printf %s secret123 | {ctx.clone}/.venv/bin/python -m rooms_service.hash_password")
        value = value.replace(HASH_PLACEHOLDER, printed.strip())
    ctx.python(
        "from rooms_service.settings import RoomsSettings\n"
        "from rooms_service.guard import StoredPassword\n"
        "stored = {k: StoredPassword(v) for k, v in RoomsSettings().passwords().items()}\n"
        "assert stored['VIP'].matches('secret123'), 'VIP does not take secret123'\n",
        env | {"ROOM_PASSWORDS": value},
    )


def check_api_keys(ctx: Context, env: dict[str, str]) -> None:
    if "PUBLISH_API_KEYS" not in env:
        return
    ctx.python(
        "from rooms_service.settings import RoomsSettings\n"
        "from rooms_service.api import create_router\n"
        "settings = RoomsSettings()\n"
        "assert settings.api_keys(), 'no keys'\n"
        "create_router(settings)  # every key is one the API takes\n",
        env,
    )


def api_curl(ctx: Context, command: Command) -> None:
    """A call of the rooms HTTP API through the gateway needs `make run`: the route (method and path) is
    checked against the rooms app's OpenAPI schema, and the key it sends against the README's `make run`."""
    argv = command.argv
    url = next(w for w in argv if w.startswith("http://127.0.0.1:8000/"))
    path = url.removeprefix("http://127.0.0.1:8000").split("?")[0]
    method = argv[argv.index("-X") + 1].lower() if "-X" in argv else "get"
    code = (
        "import re\n"
        "from rooms_service.app import create_app\n"
        "from rooms_service.settings import RoomsSettings\n"
        "paths = create_app(RoomsSettings(bus_url='memory://')).openapi()['paths']\n"
        "pattern = lambda p: re.sub(r'{[^}]+}', '[^/]+', p)\n"
        f"found = [ops for p, ops in paths.items() if re.fullmatch(pattern(p), {path!r})]\n"
        f"assert found and {method!r} in found[0], 'no {method.upper()} {path} in the rooms API'\n"
    )
    ctx.python(code, {})
    bearer = next(w for w in argv if w.startswith("Authorization: Bearer "))
    key = bearer.removeprefix("Authorization: Bearer ")
    assert documented(f"PUBLISH_API_KEYS='[\"{key}\"]' make run"), "no `make run` in the docs takes the key"
    pytest.skip("needs a running stack (make run) with PUBLISH_API_KEYS")


def hash_password(ctx: Context, command: Command) -> None:
    if "|" in command.text:  # from standard input: as written
        printed = ctx.sh(command.text).strip()
        assert printed.startswith("pbkdf2_sha256$600000$"), printed
        check = f"assert StoredPassword({printed!r}).matches('secret123')"
        ctx.python(f"from rooms_service.guard import StoredPassword; {check}", {})
    else:  # it prompts on a terminal; the module runs as written
        assert "usage:" in ctx.sh(f"{command.text} --help")


SECRET_PLACEHOLDER = "PASTE_THE_SECRET"


def openssl(ctx: Context, command: Command) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on this machine (make_token's test makes its own key)")
    ctx.sh(command.text)


def make_token(ctx: Context, command: Command) -> None:
    """Mints a token as written (a real secret for the placeholder, a key made here when the README's
    openssl lines did not run) and checks that the service's verifier takes it."""
    env = {k: v.replace(SECRET_PLACEHOLDER, "s" * 43) for k, v in command.env.items()}
    argv = command.argv
    check = "TokenVerifier(os.environ['TOKEN_SECRET'])"
    if "--private-key" in argv:
        key = ctx.cwd / argv[argv.index("--private-key") + 1]
        if not key.exists():
            ctx.python(
                "from cryptography.hazmat.primitives import serialization as s\n"
                "from cryptography.hazmat.primitives.asymmetric import ec\n"
                "k = ec.generate_private_key(ec.SECP256R1())\n"
                f"open({str(key)!r}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8,"
                " s.NoEncryption()))",
                {},
            )
        check = (
            "TokenVerifier(public_key=load_pem_private_key(open("
            f"{str(key)!r}, 'rb').read(), None).public_key().public_bytes(Encoding.PEM, "
            "PublicFormat.SubjectPublicKeyInfo).decode())"
        )
    token = ctx.sh(shlex.join(argv), env=env).strip()
    ctx.python(
        "import os, sys\n"
        "from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, "
        "load_pem_private_key\n"
        "from rooms_service.tokens import TokenVerifier\n"
        f"identity = {check}.verify({token!r})\n"
        "assert identity.user == 'ada', identity\n",
        env,
    )


def websocket_client(ctx: Context, command: Command) -> None:
    """The client runs from the venv; connecting needs `make run`, so the URL is checked against the
    gateway's routes instead."""
    assert "usage:" in ctx.sh(f"{shlex.join(command.argv[:3])} --help")
    url = command.argv[3]
    path = re.sub(r"^ws://127\.0\.0\.1:8000", "", url).split("?")[0]
    code = (
        "import sys; from gateway.routes import Route; from gateway.settings import GatewaySettings\n"
        "routes = [Route(p, u) for p, u in GatewaySettings().routes.items()]\n"
        f"assert any(r.matches({path!r}) for r in routes), 'no route for {path}'\n"
    )
    ctx.python(code, {})
    if "pass=" in url:  # a guarded room must say what guards it (an open room ignores pass)
        assert "ROOM_PASSWORDS" in command.page.read_text().split(command.text, 1)[1][:600]


def pytest_collect_only(ctx: Context, command: Command) -> None:
    """A member's tests: collected as written (running them is `make unit`)."""
    output = ctx.sh(f"{command.text} --collect-only -q")
    assert re.search(r"\d+ tests? collected", output), output[-500:]


def compose_config(ctx: Context, command: Command) -> None:
    """``compose [--profile P] up``: the Compose v2 binary validates the file (with that profile) and the
    env file the README made."""
    env_file = ".env" if (ctx.cwd / ".env").exists() else ".env.example"
    argv = command.argv
    profiles = " ".join(f"--profile {argv[i + 1]}" for i, w in enumerate(argv) if w == "--profile")
    ctx.sh(f"{compose_binary()} --env-file {env_file} {profiles} config -q", env=command.env)
    if "COMPOSE_BAKE" in command.env:
        assert command.env["COMPOSE_BAKE"] == "false"


def compose_flags(ctx: Context, command: Command) -> None:
    """``compose ps``/``down`` need a running stack: check the subcommand and its flags exist."""
    sub = command.argv[2]
    usage = ctx.sh(f"{compose_binary()} {sub} --help")
    for flag in (w for w in command.argv[3:] if w.startswith("-")):
        assert flag in usage, f"compose {sub} has no {flag}"
    pytest.skip(f"needs a running stack on a container engine (checked: compose {sub} and its flags exist)")


def docker_build(ctx: Context, command: Command) -> None:
    dockerfile = command.argv[command.argv.index("-f") + 1]
    assert (ctx.cwd / dockerfile).is_file(), dockerfile
    pytest.skip(f"needs a Docker engine ({dockerfile} exists; test_deploy_image_build.py replays its build)")


def kustomize(ctx: Context, command: Command) -> None:
    """``kubectl apply -k DIR`` needs a cluster; ``kubectl kustomize DIR`` is what it would apply."""
    directory = command.argv[-1]
    for release in ("newest", "1.30", "1.32"):
        ctx.sh(f"{kubectl(release)} kustomize {shlex.quote(directory)} >/dev/null")


def smoke_script(ctx: Context, command: Command) -> None:
    ctx.sh(f"bash -n {command.argv[-1]}")
    pytest.skip("root, installs podman and builds four images (minutes): `make smoke-podman` by hand")


RULES: list[tuple[str, Callable[[Context, Command], None]]] = [
    (r"^(cd|cp) ", run_as_written),
    (r"^\.venv/bin/python deploy/docker/render\.py$", run_as_written),  # in the copy
    (r"^make( |$)", make_dry_run),
    (r"(^|\| )\.venv/bin/python -m rooms_service\.hash_password$", hash_password),
    (r"^\.venv/bin/python -m rooms_service\.make_token ", make_token),
    (r"^\.venv/bin/python -c 'import secrets; print\(secrets\.token_urlsafe\(32\)\)'$", run_as_written),
    (r"^openssl (genpkey|pkey) ", openssl),
    (r"^\.venv/bin/python -m websockets ", websocket_client),
    (r"^curl .*http://127\.0\.0\.1:8000/api/", api_curl),
    (r"^\.venv/bin/python -m bench[ .]", skip("a benchmark: minutes of load on every core (make bench)")),
    (r"^(\.\./)*\.\./\.venv/bin/pytest$|^\.venv/bin/pytest \S+$", pytest_collect_only),
    (r"^docker compose (--profile \S+ )?up", compose_config),
    (r"^docker compose (ps|down)", compose_flags),
    (r"^docker build ", docker_build),
    (r"^kubectl apply -k |^kubectl kustomize \S+$", kustomize),
    (
        r"^kubectl -n \S+ (get|port-forward|create secret|rollout restart) ",
        skip("needs a Kubernetes cluster"),
    ),
    (r"^kubectl kustomize$", skip("names the tool, not a command")),
    (r"^bash deploy/smoke/podman-smoke\.sh$", smoke_script),
    (
        r"^\.venv/bin/uvicorn --app-dir docs/tutorial |^\.venv/bin/python docs/tutorial/|"
        r"^curl .*http://127\.0\.0\.1:8080/",
        skip("the tutorial: run in order against a stack by test_the_tutorial_runs_as_written"),
    ),
    (r"^\.venv/bin/python my_room\.py$", skip("the README's one-minute path: test_the_one_minute_path")),
    (r"^\.venv/bin/mkdocs ", skip("builds or serves the site: make docs runs it (part of make test)")),
    (r"^\.venv/bin/python tools/docs/hooks\.py ", run_as_written),
]


def rule_for(command: Command) -> Callable[[Context, Command], None]:
    argv_text = shlex.join(command.argv) if "|" not in command.text else command.text
    if "&&" in command.text:  # `cd DIR && CMD`: the part after cd
        argv_text = command.text.split("&&", 1)[1].strip()
    for pattern, rule in RULES:
        if re.search(pattern, argv_text):
            return rule
    pytest.fail(f"no rule for README command {command.text!r}: add one to {__name__}.RULES")


def test_the_readme_has_commands_and_blocks() -> None:
    assert len(COMMANDS) > 20
    assert any(c.text.startswith("make test") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.text[:80] for c in COMMANDS])
def test_readme_command_works_as_written(clone: Path, command: Command) -> None:
    ctx = Context(clone, clone)
    for line in command.setup:  # the block's earlier cd/cp lines, in order
        words = shlex.split(line)
        if words[0] == "cd":
            ctx.cwd = (ctx.cwd / words[1]).resolve()
        else:
            ctx.sh(line)
    text = command.text
    if "&&" in text and text.startswith("cd "):
        ctx.cwd = (ctx.cwd / shlex.split(text.split("&&")[0])[1]).resolve()
        command = Command(text.split("&&", 1)[1].strip())
    if command.text.startswith("cd "):
        assert (ctx.cwd / command.argv[1]).is_dir(), command.text
        return
    try:
        rule_for(command)(ctx, command)
    except pytest.skip.Exception as skipped:  # name the command in pytest -ra's list of skips
        pytest.skip(f"{text}: {skipped.msg}")


def test_the_docs_have_commands_too() -> None:
    pages = {c.page.relative_to(ROOT).as_posix() for c in COMMANDS}
    assert "docs/tutorial/chat-backend.md" in pages and "docs/howto/publish.md" in pages, pages


def test_no_readme_command_uses_a_bare_python() -> None:
    """`python` may be missing or outside the venv: the README names .venv/bin/python."""
    bare = [c.text for c in COMMANDS if re.search(r"(^|\| |&& )python3? ", c.text)]
    assert bare == []


# --- the tutorial, run as a reader would ---------------------------------------------------------------
def tutorial_commands() -> list[str]:
    """The lines of the tutorial's ``sh`` blocks, but the one that prints a new secret."""
    blocks = re.findall(r"^```sh\n(.*?)^```", TUTORIAL.read_text(), flags=re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(".venv/bin/python -c")]


class Reader:
    """A process started from a tutorial command, whose output is read line by line with a deadline."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        written = Command(command)  # VAR=value ... program args: no shell between, so stop() ends it
        self.process = subprocess.Popen(
            written.argv,
            cwd=ROOT,
            env=os.environ | written.env | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return next(line for line in self.lines if text in line)
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if not line and self.process.poll() is not None:
                    break
                self.lines.append(line)
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_the_tutorial_runs_as_written() -> None:
    """Its commands in order: the platform (as ``make run`` would start it, on free ports), the backend
    (its port and the gateway's address moved to those), a member, and the announcement with curl."""
    run, backend, member, announce = tutorial_commands()
    env = Command(run).env
    assert Command(run).argv == ["make", "run"] and set(env) == {"TOKEN_SECRET", "PUBLISH_API_KEYS"}
    port = free_port()
    with make_stack(**env) as stack:
        server = Reader(
            backend.replace("--port 8080", f"--port {port} --host 127.0.0.1"),
            {"GATEWAY_URL": stack.http_url},
        )
        try:
            server.wait_for("Application startup complete")
            chat = Reader(
                f"{member} --backend http://127.0.0.1:{port} --gateway {stack.gateway_url} --count 2", {}
            )
            try:
                assert "Ada L. (ada)" in chat.wait_for("joined support as")
                assert chat.wait_for("hello from Ada L.").startswith("[1] Ada L.: ")
                answer = Context(ROOT, ROOT).sh(announce.replace(":8080/", f":{port}/"))
                assert json.loads(answer) == {"seq": 2}
                assert chat.wait_for("welcome to support").strip() == "[2] support bot: welcome to support"
                assert chat.process.wait(30) == 0
            finally:
                chat.stop()
        finally:
            server.stop()


def test_the_one_minute_path() -> None:
    """README's "Try it in one minute", as a newcomer follows it: the stack as its ``make run`` line starts
    it (on free ports), the script saved from its python block, the curl publish; the script prints it."""
    text = README.read_text()
    section = text.split("## Try it in one minute", 1)[1].split("\n## ", 1)[0]
    run, script_command, publish = (
        line.strip()
        for block in re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)[:3]
        for line in block.splitlines()
    )
    script = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)[0]
    assert script_command == ".venv/bin/python my_room.py" and "Save this as `my_room.py`" in section
    env = Command(run).env
    assert Command(run).argv == ["make", "run"] and set(env) == {"PUBLISH_API_KEYS"}
    with make_stack(**env) as stack:
        target = ROOT / ".stack" / f"my_room_{os.getpid()}.py"
        target.parent.mkdir(exist_ok=True)
        target.write_text(script.replace("ws://127.0.0.1:8000", stack.gateway_url))
        member = Reader(f".venv/bin/python {target}", {})
        try:
            member.wait_for("in the room, waiting for messages")
            answer = Context(ROOT, ROOT).sh(publish.replace("http://127.0.0.1:8000", stack.http_url))
            assert answer.startswith("HTTP/1.1 201"), answer
            seq = json.loads(answer.split("\n\n", 1)[1])["seq"]
            assert member.wait_for("order 1234 shipped").strip() == f"{seq} shop order 1234 shipped"
        finally:
            member.stop()
            target.unlink()
