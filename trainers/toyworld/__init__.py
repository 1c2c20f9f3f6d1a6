"""A small world where a text-to-image model really learns on a CPU: the pictures, the subject, the
pre-trained model and judges shipped in ``weights/``, and the study that compares the methods on it."""

from pathlib import Path

CHECKPOINT_NAME = "toy_sd15.safetensors"
JUDGE_NAME = "clip_judge"
WEIGHTS = Path(__file__).with_name("weights")
TOY_CHECKPOINT = WEIGHTS / CHECKPOINT_NAME
TOY_JUDGE = WEIGHTS / JUDGE_NAME
DEMO_STEPS = 400  # training steps of `python -m trainers demo` (here so the CLI declares it without importing torch)
