"""The VM image's sources: packer fmt/validate (packer 1.6.6), shellcheck, and drift checks against the container."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKER_DIR = ROOT / "packer"
TEMPLATE = PACKER_DIR / "pgappliance.pkr.hcl"
UNIT = PACKER_DIR / "files" / "pgappliance.service"
DOCKERFILE = ROOT / "image" / "Dockerfile"
SHELL_SCRIPTS = [
    "image/provision.sh",
    "packer/build-base-qcow2.sh",
    "packer/files/vm-run",
    "scripts/test-vm",
    *sorted(str(p.relative_to(ROOT)) for p in (PACKER_DIR / "scripts").glob("*.sh")),
]
VALIDATE_VARS = [
    "-var",
    "base_image=/nonexistent/debian-bookworm-base.qcow2",
    "-var",
    "base_image_checksum=sha256:" + "0" * 64,
    "-var",
    "ssh_password=validate-only",
]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup installs it from Debian)")
    return path


def _packer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No telemetry call, no packer_cache/ in the checkout.
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([_tool("packer"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("directory", ["packer", "packer/modern"])
def test_packer_fmt(tmp_path: Path, directory: str) -> None:
    result = _packer(tmp_path, "fmt", "-check", directory)
    assert result.returncode == 0, f"run `packer fmt {directory}`: {result.stdout}{result.stderr}"


def test_packer_validate(tmp_path: Path) -> None:
    result = _packer(tmp_path, "validate", *VALIDATE_VARS, "packer")
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_validate_with_var_file_and_tcg(tmp_path: Path) -> None:
    # The var file build-base-qcow2.sh writes, and the software-emulation settings scripts/test-vm uses.
    key = tmp_path / "build_ed25519"
    subprocess.run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    var_file = tmp_path / "base.pkrvars.hcl"
    var_file.write_text(
        f'base_image = "/nonexistent/base.qcow2"\nbase_image_checksum = "sha256:{"1" * 64}"\n'
        f'ssh_username = "packer"\nssh_private_key_file = "{key}"\n'
    )
    result = _packer(
        tmp_path,
        "validate",
        f"-var-file={var_file}",
        "-var",
        "accelerator=tcg",
        "-var",
        f"wheelhouse={tmp_path}",
        "-var",
        f"serial_log={tmp_path / 'serial.log'}",
        "packer",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_validate_rejects_an_unknown_accelerator(tmp_path: Path) -> None:
    result = _packer(tmp_path, "validate", *VALIDATE_VARS, "-var", "accelerator=vmware", "packer")
    assert result.returncode != 0
    assert "accelerator must be one of" in result.stdout + result.stderr


def test_template_dir_stays_within_packer_1_6_6() -> None:
    # 1.6.6 rejects these blocks; they live in packer/modern/, which `packer build packer/` does not read.
    for path in PACKER_DIR.glob("*.pkr.hcl"):
        text = path.read_text()
        assert not re.search(r"^\s*required_plugins\s*\{", text, re.M), path
        assert not re.search(r"^\s*data\s+\"", text, re.M), path
    modern = (PACKER_DIR / "modern" / "plugins.pkr.hcl").read_text()
    assert "required_plugins" in modern and 'source  = "github.com/hashicorp/qemu"' in modern


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck(script: str) -> None:
    result = subprocess.run([_tool("shellcheck"), script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_copies() -> list[str]:
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            sources.extend(line.split()[1:-1])
    return sources


def test_vm_receives_what_the_container_build_copies() -> None:
    template = TEMPLATE.read_text()
    copies = _dockerfile_copies()
    assert "image/provision.sh" in copies
    for source in copies:
        assert f'"${{local.src}}/{source}"' in template, f"the Dockerfile copies {source}: the template must upload it"


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    block = next(line for line in text.splitlines() if line.startswith("ENV "))
    return dict(pair.split("=", 1) for pair in block.split()[1:])


def test_unit_runs_the_container_entrypoint_with_the_container_env() -> None:
    unit = UNIT.read_text()
    assert "EnvironmentFile=/etc/pgappliance/appliance.env" in unit
    assert "ConditionPathExists=/etc/pgappliance/appliance.env" in unit
    assert "KillMode=mixed" in unit
    environment = re.search(r"^Environment=(.*)$", unit, re.M)
    assert environment is not None
    assert dict(pair.split("=", 1) for pair in environment.group(1).split()) == _dockerfile_env()
    wrapper = (PACKER_DIR / "files" / "vm-run").read_text()
    entrypoint = re.search(r'ENTRYPOINT \["([^"]+)", "-m", "([^"]+)"\]', DOCKERFILE.read_text())
    assert entrypoint is not None
    assert f"exec {entrypoint.group(1)} -m {entrypoint.group(2)} run" in wrapper
