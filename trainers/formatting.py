"""Numbers and text as people read them, for the CLI and the reports (no heavy imports: the CLI starts with it)."""

from __future__ import annotations


def format_size(size: float) -> str:
    """Bytes in B, KB, MB or GB (powers of 1024), e.g. ``2.0 GB``."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def is_text(value: str) -> bool:
    """False for strings carrying bytes that were not UTF-8 (Python keeps them from file names and
    the command line as lone surrogates, which fail later, in a tokenizer or a file's metadata)."""
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable(text: object) -> str:
    """``text`` with any undecodable bytes shown as escapes, so a message naming it can always be printed."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")
