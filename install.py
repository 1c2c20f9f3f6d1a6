"""Install Booth's missing dependencies into the running Python (ComfyUI-Manager runs this file).

Only packages that are absent or too old are installed. torch and its companions, and every
package ComfyUI pins to an exact version in its requirements.txt, are never installed, upgraded or
downgraded: a Booth requirement they do not already meet is reported, not installed. Every other
package already present is passed to pip as a constraint at its current version, so if a new
package needs one of them moved, pip stops and nothing changes.

    python install.py            install what is missing
    python install.py --dry-run  only print the plan
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).absolute().parent
REQUIREMENTS = HERE / "requirements.txt"
# ComfyUI's, never Booth's to change: installed by the user for their GPU, or pinned by ComfyUI.
PROTECTED = frozenset({"torch", "torchvision", "torchaudio", "torchsde"})
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXACT_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#,]+)\s*(?:[;#].*)?$")


@dataclass(frozen=True)
class InstallPlan:
    install: list[str]  # requirement lines to hand to pip
    constraints: list[str]  # "name==version" for every installed package that must not move
    blocked: list[str]  # one sentence per requirement that only torch or a ComfyUI pin could meet


def canonical(name: str) -> str:
    """Package names compare case-insensitively with -, _ and . equivalent (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a requirements file, comments, blank lines and pip options dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def comfyui_pins(comfyui_requirements: Path) -> dict[str, str]:
    """Packages ComfyUI's requirements.txt pins to one version (comfyui-frontend-package==…)."""
    pins = {}
    for line in requirement_lines(comfyui_requirements):
        match = _EXACT_PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def comfyui_requirements_file() -> Path | None:
    """ComfyUI's requirements.txt when this pack sits in ComfyUI/custom_nodes/<pack>/."""
    candidate = HERE.parent.parent / "requirements.txt"
    return candidate if (HERE.parent.name == "custom_nodes" and candidate.is_file()) else None


def installed_packages() -> dict[str, str]:
    """Canonical name -> version of every distribution in this Python environment."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and dist.version:
            found.setdefault(canonical(name), dist.version)
    return found


def _satisfies(requirement: str, version: str) -> bool:
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion

    try:
        return Requirement(requirement).specifier.contains(version, prereleases=True)
    except InvalidVersion:  # a local build with an odd version string: do not touch it
        return True


def plan_install(requirements: list[str], installed: dict[str, str], pins: dict[str, str]) -> InstallPlan:
    """What pip must install so that ``requirements`` hold, without moving a protected or pinned package.

    ``installed``: canonical name -> version (see :func:`installed_packages`); ``pins``: canonical
    name -> version that ComfyUI requires exactly (see :func:`comfyui_pins`).
    """
    install, blocked = [], []
    for requirement in requirements:
        name = canonical(_NAME.match(requirement).group(1))
        version = installed.get(name)
        if version is not None and _satisfies(requirement, version):
            continue
        if name in PROTECTED or name in pins:
            owner = "ComfyUI pins it" if name in pins else "it belongs to your ComfyUI install"
            have = f"{version} is installed" if version else "it is not installed"
            blocked.append(f"{requirement}: {have}, and {owner}; Booth will not change it. Install a matching "
                           f"version yourself only if you know your ComfyUI works with it.")
            continue
        install.append(requirement)
    moving = {canonical(_NAME.match(requirement).group(1)) for requirement in install}
    constraints = [f"{name}=={version}" for name, version in sorted(installed.items()) if name not in moving]
    return InstallPlan(install, constraints, blocked)


def main(argv: list[str]) -> int:
    pins_file = comfyui_requirements_file()
    plan = plan_install(requirement_lines(REQUIREMENTS), installed_packages(),
                        comfyui_pins(pins_file) if pins_file else {})
    for sentence in plan.blocked:
        print(f"[Booth] not installed: {sentence}")
    if not plan.install:
        print("[Booth] nothing to install" + ("" if plan.blocked else ": all requirements are met"))
        return 1 if plan.blocked else 0
    print(f"[Booth] installing: {' '.join(plan.install)} (installed packages are held at their versions)")
    if "--dry-run" in argv:
        return 0
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(plan.constraints) + "\n", encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-c", str(constraints), *plan.install])
    if result.returncode != 0:
        print("[Booth] pip could not install the requirements without changing packages you already have "
              "(those are never moved). Install them by hand: pip install " + " ".join(plan.install))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
