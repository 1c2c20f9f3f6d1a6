#!/usr/bin/env bash
# Create or update .venv with everything Booth needs to run its demo and tests on a CPU-only machine.
# Idempotent: a second run only checks. Installs torch first at a pinned version so nothing pulls another build;
# on a machine whose default index serves CUDA wheels, point PIP_INDEX_URL at PyTorch's CPU wheel index first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${BOOTH_TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
pip_install "torch==${TORCH_VERSION}"
pip_install -r requirements-pinned.txt "torch==${TORCH_VERSION}"
# Only for its CLIP vocabulary file; --no-deps keeps torchvision (and another torch) out.
pip_install --no-deps "open_clip_torch==3.3.0"
