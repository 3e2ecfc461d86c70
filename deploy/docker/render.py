"""Writes the four Dockerfiles from one template: they differ only in the member they install.

    python3 deploy/docker/render.py           # rewrite services/*/Dockerfile and gateway/Dockerfile
    python3 deploy/docker/render.py --check   # exit 1 if one differs from the template (the tests do this)

Each deployable keeps its own Dockerfile (``docker build -f services/rooms/Dockerfile .`` and compose's
``build.dockerfile`` name it), so a reader sees the whole image in one file; the shared text lives once,
in ``Dockerfile.template`` beside this file, with ``@name@`` placeholders. Standard library only.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("Dockerfile.template")
# Workspace members whose manifests uv needs to read the workspace, in the order the images copy them.
MEMBERS = ["services/echo", "services/rooms", "services/stats", "gateway", "tools/devstack"]
# name -> (member folder, uv package, python module, port)
DEPLOYABLES = {
    "echo": ("services/echo", "echo-service", "echo_service", 8101),
    "rooms": ("services/rooms", "rooms-service", "rooms_service", 8201),
    "stats": ("services/stats", "stats-service", "stats_service", 8301),
    "gateway": ("gateway", "gateway", "gateway", 8000),
}


def render(name: str) -> str:
    member, package, module, port = DEPLOYABLES[name]
    copies = [f"COPY {member} {member}"]
    copies += [f"COPY {m}/pyproject.toml {m}/" for m in MEMBERS if m != member]
    text = TEMPLATE.read_text()
    for key, value in {
        "name": name,
        "member": member,
        "package": package,
        "module": module,
        "port": str(port),
        "copy_members": "\n".join(copies),
    }.items():
        text = text.replace(f"@{key}@", value)
    return text


def main(argv: list[str]) -> int:
    stale = []
    for name, (member, *_) in DEPLOYABLES.items():
        path = ROOT / member / "Dockerfile"
        wanted = render(name)
        if path.read_text() != wanted:
            stale.append(str(path.relative_to(ROOT)))
            if "--check" not in argv:
                path.write_text(wanted)
    if stale and "--check" in argv:
        print(f"not rendered from {TEMPLATE.name}: {', '.join(stale)} (run python3 {__file__})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
