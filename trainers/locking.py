"""A lock that dies with its process: two runs writing the same files at once would both report
success while one result is silently lost.

The operating system releases the lock when the process ends in any way (even ``kill -9``), so a
crashed run never leaves a stale lock behind; the lock file itself is hidden and removed on release.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import BoothError

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def lock_name(target: Path) -> Path:
    """The hidden lock file guarding ``target`` (a file or a folder), beside it."""
    return target.parent / f".{target.name}.booth-lock"


@contextlib.contextmanager
def exclusive(targets: list[Path], what: str) -> Iterator[None]:
    """Hold a lock on every target for the block, or raise one BoothError naming the one in use."""
    with contextlib.ExitStack() as stack:
        for target in dict.fromkeys(Path(t).resolve() for t in targets):
            stack.enter_context(_locked(target, what))
        yield


@contextlib.contextmanager
def _locked(target: Path, what: str) -> Iterator[None]:
    path = lock_name(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise BoothError(f"{target} is in use by another {what} (process {_holder(path)}). Wait for it to finish, "
                             "or choose another output name and output_dir.")
        if _same_inode(fd, path):  # not a lock file another process removed while we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except OSError:
        return False


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(path.read_text().strip()))
    return "unknown"
