"""The real ComfyUI that the `comfyui` tests use (COMFYUI_PATH) and its Python. Without one they skip,
and the reason says how to get one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMFYUI = Path(os.environ["COMFYUI_PATH"]).expanduser() if os.environ.get("COMFYUI_PATH") else None
IS_CHECKOUT = COMFYUI is not None and (COMFYUI / "main.py").is_file() and (COMFYUI / "comfy" / "sd.py").is_file()
SKIP_REASON = ("no ComfyUI: set COMFYUI_PATH to a ComfyUI checkout, or make one from a ComfyUI source tree with "
               "COMFYUI_PATH=$(bash scripts/comfyui.sh PATH/TO/ComfyUI) (see docs/comfyui.md)" if COMFYUI is None
               else f"COMFYUI_PATH={COMFYUI} is not a ComfyUI checkout (it needs main.py and comfy/sd.py)")


def comfy_python() -> str:
    """COMFYUI_PYTHON, else the checkout's own .venv, else this Python."""
    chosen = os.environ.get("COMFYUI_PYTHON")
    if chosen:
        return chosen
    for venv_python in (COMFYUI / ".venv" / "bin" / "python", COMFYUI / ".venv" / "Scripts" / "python.exe"):
        if venv_python.is_file():
            return str(venv_python)
    return sys.executable
