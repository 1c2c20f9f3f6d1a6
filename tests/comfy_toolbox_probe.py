"""Report what a real ComfyUI does with checkpoints and LoRAs from Booth's LoRA toolbox, as one JSON line.

Run by tests/test_comfyui_toolbox.py with ComfyUI's own Python, like comfy_probe.py (whose helpers it
uses); it only observes and reports, the assertions live in the test module.

    python comfy_toolbox_probe.py same-image --ckpt BASE --lora LORA --strength S --strength-clip T
                                             --baked BAKED [--pack FOLDER --root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
from pathlib import Path

from comfy_probe import LOAD_MESSAGES, LORA_MESSAGES, RESULT_PREFIX, _load_pack, captured, generate, use_cpu

MERGED_NAME = "node_merged"


def load(path: str):
    import comfy.sd

    with captured(LOAD_MESSAGES) as log:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                                   embedding_directory=None)
    return model, clip, vae, log


def release() -> None:
    """Unload every model, so one full-size copy at a time is in memory."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()


def difference(image, reference) -> dict:
    gap = (image - reference).abs()
    return {"max": float(gap.max()), "mean": float(gap.mean())}


def _run_merge_node(args, model, clip, vae) -> dict:
    """Booth Merge LoRA as the executor runs it: the LoRA picked from models/loras, saving a checkpoint."""
    import torch
    import folder_paths
    import nodes

    root = Path(args.root)
    for folder in ("loras", "checkpoints"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    shutil.copy(args.lora, root / "loras" / Path(args.lora).name)
    asyncio.run(_load_pack(args.pack))
    node = nodes.NODE_CLASS_MAPPINGS["BoothMergeLoRA"]()
    with torch.inference_mode(), captured(LORA_MESSAGES) as log:
        output = node.merge(model=model, clip=clip, lora_1=Path(args.lora).name, strength_model_1=args.strength,
                            strength_clip_1=args.strength_clip, save_checkpoint=True, vae=vae,
                            checkpoint_name=MERGED_NAME, dtype="keep")
    merged_model, merged_clip, name = output["result"]
    return {"model": merged_model, "clip": merged_clip, "name": name, "ui": output["ui"]["text"], "log": log,
            "saved": str(root / "checkpoints" / name)}


def cmd_same_image(args) -> dict:
    import comfy.sd
    import comfy.utils

    sample = dict(steps=args.steps, seed=args.seed, size=args.size, prompt=args.prompt)
    model, clip, vae, base_log = load(args.ckpt)
    report = {"base_load_log": base_log, "unet_dtype": str(model.model.get_dtype())}
    plain = generate(model, clip, vae, **sample)
    lora = comfy.utils.load_torch_file(args.lora, safe_load=True)
    with captured(LORA_MESSAGES) as lora_log:  # what Load LoRA (LoraLoader) does
        lora_model, lora_clip = comfy.sd.load_lora_for_models(model, clip, lora, args.strength, args.strength_clip)
    reference = generate(lora_model, lora_clip, vae, **sample)
    report["lora_loader"] = {"log": lora_log, "unet_patched": len(lora_model.patches),
                             "clip_patched": len(lora_clip.patcher.patches),
                             "changed_by_lora": difference(reference, plain)}
    checks = {"baked": args.baked}
    if args.pack:
        node = _run_merge_node(args, model, clip, vae)
        in_graph = generate(node["model"], node["clip"], vae, **sample)
        report["node"] = {"log": node["log"], "ui": node["ui"], "checkpoint_name": node["name"],
                          "image_vs_lora_loader": difference(in_graph, reference)}
        checks["node_saved"] = node["saved"]
        del node
    del model, clip, vae, lora_model, lora_clip
    release()
    for label, path in checks.items():
        baked_model, baked_clip, baked_vae, log = load(path)
        image = generate(baked_model, baked_clip, baked_vae, **sample)
        report[label] = {"load_log": log, "model_config": type(baked_model.model.model_config).__name__,
                         "image_vs_lora_loader": difference(image, reference), "finite": bool(image.isfinite().all())}
        del baked_model, baked_clip, baked_vae
        release()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    same = verbs.add_parser("same-image", help="base + Load LoRA vs the baked checkpoint (and Booth Merge LoRA)")
    same.add_argument("--ckpt", required=True, help="the base checkpoint")
    same.add_argument("--lora", required=True)
    same.add_argument("--strength", type=float, default=1.0)
    same.add_argument("--strength-clip", type=float, default=1.0)
    same.add_argument("--baked", required=True, help="the base with the LoRA baked in by Booth")
    same.add_argument("--pack", help="also run Booth Merge LoRA from this pack folder (inside a custom_nodes folder)")
    same.add_argument("--root", help="folder for the node's loras/ and checkpoints/ folders")
    same.add_argument("--steps", type=int, default=1)
    same.add_argument("--seed", type=int, default=0)
    same.add_argument("--size", type=int, default=64)
    same.add_argument("--prompt", default="a photo of sks dog")
    args = parser.parse_args()

    use_cpu()
    result = {"same-image": cmd_same_image}[args.verb](args)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
