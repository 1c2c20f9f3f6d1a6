"""Safe reading and atomic writing of tensor files.

Every output lands through a temporary file in the target folder and an atomic rename, so a run
killed at any moment leaves either the previous complete file or none (ComfyUI lists every file
in models/ and would offer a half-written one). Pickled formats load only with
``weights_only=True``; safetensors headers are validated before anything is allocated.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import re
import stat
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file, save_file

from .errors import BoothError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# 255 bytes is the common file-name limit; the hidden temporary adds a dot and ".xxxxxxxx.tmp".
MAX_NAME_BYTES = 255 - 14
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions any new file would
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write a .safetensors file atomically (tensors made contiguous, metadata values as strings).

    Every weight any verb writes passes here, so this is where a NaN or infinite value is refused:
    such a file loads without complaint and then draws black or noise images.
    """
    refuse_non_finite_tensors(tensors, path)
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: _save_safetensors(contiguous, tmp, meta))


def save_torch(value: object, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically, through a Python file so that a full disk raises OSError (given a
    path, torch reports it as an opaque RuntimeError)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(value, handle)

    return atomic_write(path, write)


def _save_safetensors(tensors: dict[str, torch.Tensor], tmp: Path, metadata: dict[str, str]) -> None:
    """safetensors reports a failed write (a full disk) as its own error type; make it the OSError it is."""
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except Exception as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(tmp)) from None


def refuse_non_finite_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise a BoothError naming the first floating tensor holding NaN or infinity (checked as written,
    so a value that only overflows when cast to fp16 is caught too)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise BoothError(f"Refusing to write {path}: tensor {name!r} ({str(tensor.dtype).removeprefix('torch.')}) "
                             f"would hold {bad} NaN or infinite value(s), and such a file draws black or noise "
                             "images. Nothing was written. If it came from merging, lower the strengths or "
                             "save as fp32; if an input holds such values, that input is broken.")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path (through links), or the same inode (hard links)."""
    first, second = Path(a), Path(b)
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # either does not exist (yet)
        return False


def check_output_file(path: str | os.PathLike, what: str = "Output") -> Path:
    """Refuse, before any work, an output that cannot be written: a folder, a name too long for
    the file system (with the hidden temporary's extra characters), or a folder Booth cannot write.

    Creates the output's folder if needed; returns the path.
    """
    target = Path(path)
    if target.is_dir():
        raise BoothError(f"{what} {target} is a folder; give a file name, e.g. {target / 'model.safetensors'}.")
    check_file_name(target.name, what)
    check_writable_folder(target.parent, f"the folder of {what.lower()} {target.name}")
    return target


def check_file_name(name: str, what: str) -> None:
    """Refuse a file name the file system would reject once written (with the temporary's extra characters)."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise BoothError(f"{what}: the name {name[:40]}... is {size} bytes long; at most {MAX_NAME_BYTES} fit "
                         "(file systems allow 255, the temporary file adds 14). Choose a shorter name.")


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if needed and prove it takes a new file; otherwise one BoothError naming it."""
    path = Path(folder)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BoothError(f"Cannot use {path} as {what}: {blocker} is a file. Choose a folder path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path) as probe:  # a byte, so a full disk shows too
            probe.write(b"0")
            probe.flush()
    except OSError as exc:
        raise BoothError(f"Cannot write to {path} ({what}): {exc.strerror or exc}. Choose a folder you can "
                         "write to, or free space there.") from None
    return path


def require_file(path: str | os.PathLike) -> Path:
    """``path`` as a readable file, or one BoothError that says what it really is (missing, a folder,
    a link that loops, unreadable) instead of a stack trace or a misleading "not found"."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BoothError(f"{file} is a symbolic link that loops back on itself; point it at a real file.") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise BoothError(f"File not found: {file}") from None
        raise BoothError(f"{file} cannot be read: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise BoothError(f"{file} is a folder, not a file; give the model file inside it.")
    if not os.access(file, os.R_OK):
        raise BoothError(f"{file} cannot be read: permission denied. Check the file's permissions.")
    return file


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Validate and return (tensor entries, metadata) of a safetensors file without loading tensors.

    Checks the header length, that it is JSON, and that every tensor's offsets lie inside the file
    and agree with its dtype and shape, so a truncated download or hostile header is refused
    before any memory is allocated for it.
    """
    file = require_file(path)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise BoothError(f"{file} is not a safetensors file (only {size} bytes). Re-download or re-export it.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > _MAX_HEADER_BYTES:
            raise BoothError(f"{file} is not a valid safetensors file (its header claims {header_len} bytes, over "
                             f"the {_MAX_HEADER_BYTES // 2**20} MB any real header fits in). It is damaged or not a "
                             "safetensors file; re-download or re-export it.")
        if 8 + header_len > size:
            raise BoothError(f"{file} is truncated (its header claims {header_len} bytes; the file has {size}). "
                             "Re-download or re-export it.")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BoothError(f"{file} is not a valid safetensors file (unreadable header).") from None
    if not isinstance(header, dict):
        raise BoothError(f"{file} is not a valid safetensors file (header is not a table).")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise BoothError(f"{file} is not a valid safetensors file (its __metadata__ is a {type(metadata).__name__}, "
                         "not a table). Re-download or re-export it.")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        try:
            start, end = entry["data_offsets"]
            shape, dtype = entry["shape"], entry["dtype"]
            if not all(type(v) is int for v in (start, end, *shape)) or any(dim < 0 for dim in shape):
                raise TypeError
            expected = math.prod(shape) * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise BoothError(f"{file} is not a valid safetensors file: tensor {name!r} has a malformed header "
                             "entry. Re-download or re-export it.") from None
        if not (0 <= start <= end <= data_len) or end - start != expected:
            raise BoothError(f"{file} is truncated or corrupt: tensor {name!r} lies outside the file's data "
                             f"({data_len} bytes). Re-download or re-export it.")
    return header, {str(k): str(v) for k, v in metadata.items()}


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a tensor file as (state dict, metadata); pickles only through ``weights_only=True``."""
    file = require_file(path)
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        _, metadata = read_safetensors_header(file)
        try:
            tensors = load_file(str(file))
        except Exception as exc:  # safetensors raises several types for damaged files
            raise BoothError(f"{file} could not be read as safetensors ({_first_line(exc)}). It may be truncated or "
                             "corrupt; re-download or re-export it.") from None
        return tensors, metadata
    if suffix in PICKLE_SUFFIXES:
        return _unwrap_pickled_state_dict(load_pickle(file), file), {}
    raise BoothError(f"{file}: unsupported file type {suffix!r}; expected .safetensors, .ckpt, .pt, .pth or .bin.")


def load_pickle(path: str | os.PathLike) -> object:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only.

    A pickle that asks for anything else (a class, a function such as ``exec``) is refused before
    that object is created, so no code in the file runs; the message names what it asked for.
    """
    file = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it may not know; the refusal says enough
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(file), map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower() or not _holds_a_pickle(file):
            refusal = _UNPICKLER_ERROR.search(str(exc))
            detail = f"WeightsUnpickler: {refusal.group(1).strip()[:120]}" if refusal else _first_line(exc)
            raise BoothError(f"{file} is truncated or corrupt, or not a PyTorch checkpoint ({detail}). "
                             "Re-download or re-export it.") from None
        wanted = _REFUSED_GLOBAL.search(str(exc))
        asks = f" (it asks for {wanted.group(1)})" if wanted else ""
        raise BoothError(f"{file} could not be loaded safely: it holds pickled objects other than tensors{asks}, "
                         "and loading them could run code. Only plain tensor checkpoints are accepted; use a "
                         ".safetensors version of the model, or convert this one with a tool you trust.") from None
    except Exception as exc:  # a cut-off zip, an empty or non-pickle file: torch raises many types
        raise BoothError(f"{file} is truncated or corrupt, or not a PyTorch checkpoint ({_first_line(exc)}). "
                         "Re-download or re-export it.") from None


def _holds_a_pickle(file: Path) -> bool:
    """Whether the file is a pickle at all (a zip with a data.pkl, or raw pickle bytes): only then
    can a refusal mean the pickle asks for objects, rather than that the file is something else."""
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        with open(file, "rb") as handle:
            return handle.read(1) == b"\x80"  # the PROTO opcode every pickle since protocol 2 starts with
    except (OSError, zipfile.BadZipFile):
        return False


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unwrap_pickled_state_dict(loaded: object, file: Path) -> dict[str, torch.Tensor]:
    """Old checkpoints nest the weights under 'state_dict'; keep only tensors."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise BoothError(f"{file} does not hold a table of tensors.")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
