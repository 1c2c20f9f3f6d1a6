"""Numbers as people read them, for the CLI and the reports (no heavy imports: the CLI starts with it)."""

from __future__ import annotations


def format_size(size: float) -> str:
    """Bytes in B, KB, MB or GB (powers of 1024), e.g. ``2.0 GB``."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
