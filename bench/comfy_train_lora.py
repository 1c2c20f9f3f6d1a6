"""Train a LoRA with ComfyUI's built-in "Train LoRA" node (TrainLoraNode), outside the server.

The benchmark's ComfyUI reference. Run it with ComfyUI's own Python, ideally under
``trainers/bench/step_clock.py`` so each optimiser step is timed::

    <comfyui>/.venv/bin/python comfy_train_lora.py --comfy-root <comfyui> --ckpt M.safetensors \
        --images DIR --prompt "a photo of sks star" --steps 6 --rank 8 --out lora.safetensors

It does what a graph of Load Checkpoint -> CLIP Text Encode + VAE Encode -> Train LoRA -> Save LoRA
does, on the CPU, in fp32 (the node's ``training_dtype``/``lora_dtype``), gradient checkpointing off
unless asked. Images must already be at the training size.
"""

import argparse
import os
import sys
from pathlib import Path


def _bootstrap(root: str) -> None:
    """comfy.* importable, and the CPU chosen before comfy.model_management is first imported."""
    sys.path.insert(0, root)
    os.chdir(root)
    from comfy.cli_args import args

    args.cpu = True


def _load_images(folder: str):
    import numpy as np
    import torch
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in files]
    return [torch.from_numpy(a)[None] for a in arrays]  # BHWC, one batch per image as LoadImage gives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy-root", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ckpt, images, out = (str(Path(p).resolve()) for p in (args.ckpt, args.images, args.out))
    _bootstrap(args.comfy_root)

    import torch
    import comfy.sd
    from safetensors.torch import save_file
    from comfy_extras.nodes_train import TrainLoraNode

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            ckpt, output_vae=True, output_clip=True, embedding_directory=None)[:3]
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(args.prompt))
        latents = [{"samples": vae.encode(image[:, :, :, :3])} for image in _load_images(images)]
        del clip, vae
        lora, losses, steps = TrainLoraNode.execute(
            model=[model], latents=latents, positive=[positive], batch_size=[args.batch_size], steps=[args.steps],
            grad_accumulation_steps=[1], learning_rate=[args.learning_rate], rank=[args.rank], optimizer=["AdamW"],
            loss_function=["MSE"], seed=[args.seed], training_dtype=["fp32"], lora_dtype=["fp32"],
            quantized_backward=[False], algorithm=["LoRA"], gradient_checkpointing=[args.gradient_checkpointing],
            checkpoint_depth=[1], offloading=[False], existing_lora=["[None]"], bucket_mode=[False],
            bypass_mode=[False]).result
    save_file({k: v.contiguous() for k, v in lora.items()}, out)
    print(f"trained {steps} steps, losses {[round(x, 4) for x in losses['loss']]}, saved {out}")


if __name__ == "__main__":
    main()
