"""Install Booth's missing dependencies into the running Python (ComfyUI-Manager runs this file).

Only packages that are absent or too old are installed, and every package already present is passed
to pip as a constraint at its current version, so torch, torchvision and ComfyUI's own pins are
never upgraded, downgraded or replaced. If a requirement cannot be met without moving one of them,
pip stops and nothing is changed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
NEVER_INSTALL = {"torch", "torchvision", "torchaudio"}


def _requirements() -> list[str]:
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def _is_satisfied(requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: accept any installed version
        name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
        return _installed_version(name) is not None
    parsed = Requirement(requirement)
    version = _installed_version(parsed.name)
    return version is not None and parsed.specifier.contains(version, prereleases=True)


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _current_pins() -> list[str]:
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and dist.version:
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def missing_requirements() -> list[str]:
    return [r for r in _requirements() if r.split(">")[0].split("=")[0].strip().lower() not in NEVER_INSTALL
            and not _is_satisfied(r)]


def main() -> int:
    missing = missing_requirements()
    if not missing:
        print("[Booth] all requirements are already installed")
        return 0
    print(f"[Booth] installing: {' '.join(missing)} (installed packages are held at their versions)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(_current_pins()) + "\n")
    command = [sys.executable, "-m", "pip", "install", "-c", constraints.name, *missing]
    result = subprocess.run(command)
    Path(constraints.name).unlink(missing_ok=True)
    if result.returncode != 0:
        print("[Booth] pip could not install the requirements without changing packages you already have "
              "(torch and ComfyUI's pins are never moved). Install them by hand: pip install " + " ".join(missing))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
