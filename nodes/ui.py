"""What Booth's nodes show on themselves in ComfyUI's front end, besides their outputs.

Two things: a small sample thumbnail for the live training view (web/booth.js), sent inside a
"booth.progress" event as a JPEG data URL, and images kept on a node after its run (the final
loss plot), written the way ComfyUI's own Preview Image node does it: PNG files in ComfyUI's temp
folder, listed in the node's "ui" result.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import torch
from PIL import Image

from ..trainers.files import atomic_write
from ..trainers.sampling import to_pil

THUMBNAIL_EDGE = 256  # the live view is about a node wide
JPEG_QUALITY = 85  # a 256 px thumbnail: tens of kB as JPEG, several times that as PNG; sent every N steps
JPEG_DATA_URL = "data:image/jpeg;base64,"


def sample_event(step: int, images: torch.Tensor) -> dict:
    """A "booth.progress" payload with the first sample image as a JPEG data URL, at most
    THUMBNAIL_EDGE pixels on its longer side, for the node's live view."""
    picture = to_pil(images[0])[0]
    picture.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {"event": "sample", "step": step, "image": JPEG_DATA_URL + base64.b64encode(buffer.getvalue()).decode()}


def write_images(images: torch.Tensor, folder: Path, prefix: str, kind: str = "temp") -> list[dict]:
    """Save an IMAGE batch as numbered PNGs ``prefix_00001_.png`` … in ``folder`` (atomically) and
    return the entries ComfyUI's front end uses to show them: filename, subfolder, type."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = {path.name for path in folder.glob(f"{prefix}_*_.png")}
    entries, counter = [], 1
    for image in images:
        while f"{prefix}_{counter:05}_.png" in taken:
            counter += 1
        name = f"{prefix}_{counter:05}_.png"
        taken.add(name)
        picture = to_pil(image)[0]
        atomic_write(folder / name, lambda tmp: picture.save(tmp, format="PNG"))
        entries.append({"filename": name, "subfolder": "", "type": kind})
    return entries


def images_ui(images: torch.Tensor, prefix: str) -> dict:
    """The "ui" entry that keeps ``images`` visible on the node after the run (ComfyUI's temp
    folder, emptied when ComfyUI restarts). Merge it into the node's ``{"ui": …}`` dict."""
    import folder_paths

    return {"images": write_images(images, Path(folder_paths.get_temp_directory()), prefix)}
