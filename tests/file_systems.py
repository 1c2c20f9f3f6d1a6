"""Real file-system conditions for the tests, made to bind root too (CI runs as root, and root
ignores file modes): a small or read-only disk is a real tmpfs mount, and an unreadable file is
tested in a process started without the capabilities that let root read past file modes."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What lets root read and write past file modes (capabilities(7)); a process without them is bound
# by the modes like any user.
PERMISSION_OVERRIDES = "-dac_override,-dac_read_search"


def is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A fresh tmpfs mounted on ``folder`` for the block (``options`` as for mount -o, e.g.
    "size=64k" or "ro,size=64k"); the test is skipped where none can be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    if not is_root() or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                       capture_output=True).returncode:
        pytest.skip("needs root and tmpfs to mount a file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[str]:
    """``folder`` made read-only for real for the block; yields the reason a write there fails.

    As root, a read-only tmpfs mounted on it (EROFS, which binds root); otherwise mode 555 (EACCES).
    """
    if is_root():
        with tmpfs(folder, "ro,size=64k"):
            yield "Read-only file system"
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("folder modes are not enforced on this system")
        yield "Permission denied"
    finally:
        folder.chmod(0o755)


def run_cli_bound_by_file_modes(argv: list[str]) -> subprocess.CompletedProcess:
    """The real command line in a process that file modes bind: as root, started by setpriv without
    root's permission overrides, so a mode-000 file is as unreadable to it as to any user."""
    command = [sys.executable, "-m", "trainers", *argv]
    if is_root():
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to run a root process that file modes bind")
        command = ["setpriv", f"--inh-caps={PERMISSION_OVERRIDES}", f"--bounding-set={PERMISSION_OVERRIDES}", "--",
                   *command]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
