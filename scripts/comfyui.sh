#!/usr/bin/env bash
# Make a ComfyUI source tree runnable for the real-ComfyUI tests and print the folder to use as COMFYUI_PATH:
#
#   COMFYUI_PATH=$(bash scripts/comfyui.sh ../shared/comfyui) .venv/bin/python -m pytest -m comfyui
#
# The tree (which may be read-only) is copied to $BOOTH_COMFYUI_HOME (default .cache/comfyui) without its
# .git, .venv, models or custom nodes. The copy's .venv holds Booth's .venv as hard links (the same files:
# one torch on disk, the one scripts/setup.sh installed, which pip and ComfyUI-Manager see as installed;
# an uninstall there drops only its own links), then ComfyUI's requirements without torchaudio, and
# comfyui-manager for the install test. Rebuilt on every run (about a minute), so it follows Booth's .venv.
set -euo pipefail
SOURCE=$(cd "${1:?usage: bash scripts/comfyui.sh COMFYUI_SOURCE_FOLDER}" && pwd)
cd "$(dirname "$0")/.."
[ -f "$SOURCE/main.py" ] && [ -f "$SOURCE/comfy/sd.py" ] || { echo "$SOURCE is not a ComfyUI source tree" >&2; exit 2; }
bash scripts/setup.sh >&2
DEST=${BOOTH_COMFYUI_HOME:-.cache/comfyui}
if [ -d "$DEST" ] && [ ! -f "$DEST/.booth-comfyui-copy" ] && [ -n "$(ls -A "$DEST")" ]; then
  echo "$DEST is not empty and was not made by this script: set BOOTH_COMFYUI_HOME to another folder" >&2; exit 2
fi
rm -rf "$DEST"
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
touch "$DEST/.booth-comfyui-copy"
tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./models --exclude=./custom_nodes \
    --exclude=./input --exclude=./output --exclude=./temp --exclude=./user -cf - . | tar -C "$DEST" -xf -
chmod -R u+w "$DEST"

PYTHON="$DEST/.venv/bin/python"
.venv/bin/python -m venv --without-pip "$DEST/.venv"
site_packages() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
BOOTH_SITE=$(site_packages .venv/bin/python)
cp -al "$BOOTH_SITE/." "$(site_packages "$PYTHON")/" \
  || { echo "BOOTH_COMFYUI_HOME must be on the file system of .venv (its files are hard-linked)" >&2; exit 2; }

TORCH=$(.venv/bin/python -c 'import torch; print(torch.__version__)')
echo "torch==$TORCH" > "$DEST/.venv/torch-constraint.txt"
grep -v -E '^[[:space:]]*(torch|torchaudio)[[:space:]]*([<>=!~;#].*)?$' "$DEST/requirements.txt" \
    > "$DEST/.venv/requirements-without-torch.txt"
MANAGER=(comfyui-manager==4.3)  # where the tree does not pin one (older ComfyUI)
[ -f "$DEST/manager_requirements.txt" ] && MANAGER=(-r "$DEST/manager_requirements.txt")
# torchvision stays in: with torch held at its version, pip picks the torchvision built for it.
"$PYTHON" -m pip install --disable-pip-version-check --no-warn-conflicts -q -c "$DEST/.venv/torch-constraint.txt" \
    -r "$DEST/.venv/requirements-without-torch.txt" "${MANAGER[@]}" >&2

"$PYTHON" - "$TORCH" "$BOOTH_SITE" >&2 <<'PY'
"""The package index's torchvision is built for CUDA torch: beside a CPU torch its C++ operators cannot
load, and two fake-operator registrations that, unlike the others, do not check for them stop
`import torchvision`. Guard those two (in a new file, never through a hard link); ComfyUI uses only
torchvision's Python parts (transforms) here. Then check that ComfyUI's Python runs Booth's torch
files and that no CUDA package came in."""
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

torch_version, booth_site = sys.argv[1:]
registrations = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0]) / "_meta_registrations.py"
text = registrations.read_text()
guarded = re.sub(r'^@torch\.library\.register_fake\("(torchvision::q?nms)"\)$',
                 r'@(torch.library.register_fake("\1") if torchvision.extension._has_ops() else (lambda fn: fn))',
                 text, flags=re.MULTILINE)
if guarded != text:
    registrations.with_suffix(".guarded").write_text(guarded)
    os.replace(registrations.with_suffix(".guarded"), registrations)
check = "import torch, torchvision.transforms; print(torch.__version__, torch.__file__)"
version, location = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                                   check=True).stdout.split()
assert version == torch_version and os.path.samefile(location, Path(booth_site, "torch", "__init__.py")), location
cuda = sorted(d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"].startswith("nvidia"))
assert not cuda, f"CUDA packages in ComfyUI's venv: {cuda}"
print(f"ComfyUI's Python: torch {version} (Booth's), torchvision {importlib.metadata.version('torchvision')}")
PY
echo "$DEST"
