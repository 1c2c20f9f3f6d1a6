"""install.py: what it would install, computed against real environments, never moves torch or ComfyUI's pins."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_checkout import COMFYUI, IS_CHECKOUT, SKIP_REASON, comfy_python

ROOT = Path(__file__).resolve().parents[1]


def install_module():
    """install.py as ComfyUI-Manager runs it: a script beside the pack, not part of a package."""
    spec = importlib.util.spec_from_file_location("booth_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def install():
    return install_module()


@pytest.fixture(scope="module")
def requirements(install) -> list[str]:
    return install.requirement_lines(ROOT / "requirements.txt")


def test_this_environment_needs_nothing(install, requirements):
    installed = install.installed_packages()
    assert {"torch", "diffusers", "peft", "transformers"} <= set(installed)
    plan = install.plan_install(requirements, installed, {})
    assert plan.install == [] and plan.blocked == []


def test_missing_and_too_old_packages_are_installed_everything_else_is_held(install, requirements):
    installed = install.installed_packages()
    del installed["diffusers"]
    installed["peft"] = "0.10.0"
    plan = install.plan_install(requirements, installed, {})
    assert plan.install == ["diffusers>=0.35", "peft>=0.17"] and plan.blocked == []
    held = dict(line.split("==") for line in plan.constraints)
    assert "peft" not in held and "diffusers" not in held
    assert held["torch"] == installed["torch"] and held["transformers"] == installed["transformers"]
    assert len(held) == len(installed) - 1


def test_torch_and_comfyui_pins_are_never_installed_or_moved(install):
    installed = {"torch": "2.13.0+cpu", "comfyui-frontend-package": "1.49.6", "numpy": "2.4.6"}
    wanted = ["torch>=3.0", "torchvision", "comfyui_frontend_package>=2", "numpy>=1.24"]
    plan = install.plan_install(wanted, installed, {"comfyui-frontend-package": "1.49.6"})
    assert plan.install == []
    assert [sentence.split(":")[0] for sentence in plan.blocked] == wanted[:3]
    assert "2.13.0+cpu is installed" in plan.blocked[0] and "it is not installed" in plan.blocked[1]
    assert "ComfyUI pins it" in plan.blocked[2]
    assert sorted(plan.constraints) == ["comfyui-frontend-package==1.49.6", "numpy==2.4.6", "torch==2.13.0+cpu"]


def test_comfyui_pins_are_read_from_its_requirements_file(install, tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "comfyui-frontend-package==1.49.6\ncomfy_kitchen == 0.2.31  # kernels\ntorch\nnumpy>=1.25.0\n"
        "pydantic~=2.0\n\n# comment\n")
    assert install.comfyui_pins(tmp_path / "requirements.txt") == {
        "comfyui-frontend-package": "1.49.6", "comfy-kitchen": "0.2.31"}


def test_booth_requirements_name_no_protected_package(install, requirements):
    names = {install.canonical(install._NAME.match(line).group(1)) for line in requirements}
    assert names & install.PROTECTED == set()
    assert all(">=" in line and "==" not in line for line in requirements)  # never pins what ComfyUI has


@pytest.mark.comfyui
@pytest.mark.skipif(not IS_CHECKOUT, reason=SKIP_REASON)
def test_comfyui_environment_plan_moves_none_of_its_pins(install, requirements):
    """Against the ComfyUI checkout's own requirements and its Python's `pip list`."""
    pins = install.comfyui_pins(COMFYUI / "requirements.txt")
    assert "comfyui-frontend-package" in pins
    names = {install.canonical(install._NAME.match(line).group(1)) for line in requirements}
    assert names & set(pins) == set()
    installed = {install.canonical(name): version for name, version in pip_list(comfy_python()).items()}
    assert "torch" in installed
    plan = install.plan_install(requirements, installed, pins)
    assert plan.blocked == []
    moving = {install.canonical(install._NAME.match(line).group(1)) for line in plan.install}
    assert moving & (set(pins) | install.PROTECTED) == set()


def test_dry_run_in_this_environment_installs_nothing():
    done = subprocess.run([sys.executable, str(ROOT / "install.py"), "--dry-run"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[Booth] nothing to install: all requirements are met"


def pip_list(python: str) -> dict[str, str]:
    listing = subprocess.run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                             capture_output=True, text=True, timeout=120, check=True)
    return {row["name"].lower().replace("_", "-"): row["version"] for row in json.loads(listing.stdout)}


def served_repository(root: Path, port: int) -> str:
    """The working tree committed into a fresh bare repository under ``root``, as git's "dumb HTTP" files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    source = root / "source"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    git = ["git", "-c", "user.name=Booth test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=source, check=True)
    subprocess.run([*git, "add", "-A"], cwd=source, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=source, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(root / "served" / "booth.git")], check=True)
    subprocess.run(["git", "--git-dir", str(root / "served" / "booth.git"), "update-server-info"], check=True)
    return f"http://127.0.0.1:{port}/booth.git"


# Where comfyui-manager keeps its command line: a top-level module in 4.3, inside the package in 4.0.
CM_CLI_MODULES = ("cm_cli", "comfyui_manager.cm_cli")


def comfyui_tree(folder: Path) -> Path:
    """A ComfyUI folder with its own empty custom_nodes: the checkout's files linked, except
    folder_paths.py, copied so that ComfyUI's paths resolve to this folder."""
    folder.mkdir()
    for entry in COMFYUI.iterdir():
        if entry.name not in {"custom_nodes", "user", "models", "input", "output", "temp", "folder_paths.py"}:
            (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copy2(COMFYUI / "folder_paths.py", folder / "folder_paths.py")
    (folder / "custom_nodes").mkdir()
    return folder


@pytest.mark.slow
@pytest.mark.comfyui
@pytest.mark.skipif(not IS_CHECKOUT, reason=SKIP_REASON)
def test_comfyui_manager_installs_the_pack_from_a_git_url_without_moving_packages(tmp_path):
    python = comfy_python()
    # 4.0 imports ComfyUI's own modules, so the check runs in ComfyUI's folder, as cm_cli itself does.
    found = [module for module in CM_CLI_MODULES
             if subprocess.run([python, "-c", f"import {module}"], cwd=COMFYUI, capture_output=True).returncode == 0]
    if not found:
        pytest.skip("comfyui-manager is not installed in ComfyUI's Python (bash scripts/comfyui.sh installs it)")
    if not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git metadata to list its files")
    port = free_port()
    url = served_repository(tmp_path, port)
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path / "served")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    comfy = comfyui_tree(tmp_path / "ComfyUI")
    pins = install_module().comfyui_pins(COMFYUI / "requirements.txt")
    before = pip_list(python)
    try:
        done = subprocess.run([python, "-m", found[0], "install", url, "--mode", "local"], cwd=comfy,
                              env=dict(os.environ, COMFYUI_PATH=str(comfy)), capture_output=True, text=True,
                              timeout=900)
    finally:
        server.terminate()
        server.wait()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[INSTALLED]" in done.stdout and "[Booth] " in done.stdout  # install.py ran after the requirements
    pack = comfy / "custom_nodes" / "booth"
    assert (pack / "__init__.py").is_file() and (pack / "web" / "booth.js").is_file()
    assert sorted(path.name for path in (pack / "example_workflows").glob("*.json")) == sorted(
        path.name for path in (ROOT / "example_workflows").glob("*.json"))
    after = pip_list(python)
    for name in {"torch", "torchvision", "torchaudio", *pins}:
        assert after.get(name) == before.get(name), name
