"""constraints.txt pins every Python package, and every build (setup, image, VM, wheelhouses) installs with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not name==version"
            out[_name(name)] = version
    return out


def test_every_dependency_and_dev_tool_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pinned = pins()
    assert "pgappliance" not in pinned
    assert [r for r in wanted if _name(r) not in pinned] == []


def test_every_build_installs_with_the_constraints() -> None:
    assert '-c "$SRC/constraints.txt"' in (ROOT / "image/provision.sh").read_text()
    assert "-c constraints.txt" in (ROOT / "scripts/setup").read_text()
    assert "-c constraints.txt" in (ROOT / "image/build.sh").read_text()
    assert "-c constraints.txt" in (ROOT / "scripts/test-vm").read_text()
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines()
    copies = [line for line in (ROOT / "image/Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split()[1:-1] for line in copies)
    assert '"${local.src}/constraints.txt"' in (ROOT / "packer/pgappliance.pkr.hcl").read_text()
