"""Report what a real ComfyUI does with Booth's files, as one JSON line on stdout.

Run by tests/test_comfyui.py with ComfyUI's own Python, the ComfyUI checkout as working directory
and on PYTHONPATH. It only observes and reports; every assertion lives in the test module, so a
failure there shows what ComfyUI saw. Always on CPU, so results do not depend on the machine.

    python comfy_probe.py sample --ckpt MODEL [--lora LORA --weights-of NAME ... --weights-out FILE]
    python comfy_probe.py keymap --checkpoint-shapes JSON --lora-shapes JSON
    python comfy_probe.py resave --ckpt MODEL --out FILE
    python comfy_probe.py nodes --pack FOLDER
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys

RESULT_PREFIX = "COMFY_PROBE_RESULT "
# ComfyUI's own messages about a checkpoint's keys (comfy/sd.py, comfy/model_base.py) and a LoRA's (comfy/lora.py).
LOAD_MESSAGES = ("unet missing", "unet unexpected", "clip missing", "clip unexpected", "Missing VAE keys",
                 "Leftover VAE keys")
LORA_MESSAGES = ("lora key not loaded", "NOT LOADED")


def use_cpu() -> None:
    """Must run before anything imports comfy.model_management, which picks the device on import."""
    from comfy.cli_args import args

    args.cpu = True


class _Collector(logging.Handler):
    def __init__(self, prefixes: tuple[str, ...], found: list[dict]):
        super().__init__(logging.DEBUG)
        self.prefixes, self.found = prefixes, found

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.prefixes):
            self.found.append({"level": record.levelname, "message": message[:4000]})


@contextlib.contextmanager
def captured(prefixes: tuple[str, ...]):
    """Collect ComfyUI's log records starting with ``prefixes`` (debug ones too) while the block runs."""
    found: list[dict] = []
    root = logging.getLogger()
    handler, level = _Collector(prefixes, found), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield found
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def generate(model, clip, vae, steps: int, seed: int, size: int, prompt: str):
    """What CLIPTextEncode -> EmptyLatentImage -> KSampler (euler, normal, cfg 7) -> VAEDecode compute."""
    import torch
    import comfy.sample

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, size // 8, size // 8]))
        noise = comfy.sample.prepare_noise(latent, seed)
        samples = comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", positive, negative, latent,
                                      disable_pbar=True, seed=seed)
        return vae.decode(samples).float()


def image_report(image) -> dict:
    return {"shape": list(image.shape), "finite": bool(image.isfinite().all()),
            "mean": float(image.mean()), "std": float(image.std())}


def lora_key_map(base_model, text_model) -> dict:
    """LoRA module name -> model key, built exactly as comfy.sd.load_lora_for_models builds it."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(base_model, {})  # fresh dicts: the defaults are shared
    return comfy.lora.model_lora_keys_clip(text_model, key_map)


def cmd_sample(args) -> dict:
    import torch
    import comfy.sd
    import comfy.utils
    from safetensors.torch import save_file

    with captured(LOAD_MESSAGES) as load_log:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(args.ckpt, output_vae=True, output_clip=True,
                                                                   embedding_directory=None)
    report = {"model_class": type(model.model).__name__, "model_config": type(model.model.model_config).__name__,
              "prediction": model.model.model_type.name, "unet_dtype": str(model.model.get_dtype()),
              "load_log": load_log}
    base = generate(model, clip, vae, args.steps, args.seed, args.size, args.prompt)
    report["image"] = image_report(base)
    if not args.lora:
        return report

    lora = comfy.utils.load_torch_file(args.lora, safe_load=True)
    with captured(LORA_MESSAGES) as lora_log:
        lora_model, lora_clip = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    key_map = lora_key_map(model.model, clip.cond_stage_model)
    patched = {}
    for name in args.weights_of:  # ComfyUI's own patched weight, read before sampling leaves the model patched
        patcher = lora_model if key_map[name].startswith("diffusion_model.") else lora_clip.patcher
        patched[name] = patcher.patch_weight_to_device(key_map[name], return_weight=True).float().contiguous()
    if args.weights_out:
        save_file(patched, args.weights_out)
    with_lora = generate(lora_model, lora_clip, vae, args.steps, args.seed, args.size, args.prompt)
    report["lora"] = {"tensors": len(lora), "log": lora_log,
                      "unet_patched": len(lora_model.patches) - len(model.patches),
                      "clip_patched": len(lora_clip.patcher.patches) - len(clip.patcher.patches),
                      "image": image_report(with_lora),
                      "mean_abs_pixel_diff": float((with_lora - base).abs().mean() * 255.0)}
    return report


def _meta_tensors(shapes: dict[str, list[int]]) -> dict:
    """Weightless tensors; 0-d ones (LoRA alphas, read with .item()) are real."""
    import torch

    return {key: torch.ones(()) if not shape else torch.empty(shape, device="meta") for key, shape in shapes.items()}


def cmd_keymap(args) -> dict:
    """Detect, build (on the meta device) and key-map a full-size model from its tensor shapes alone."""
    import torch
    import comfy.lora
    import comfy.model_detection

    with open(args.checkpoint_shapes) as handle:
        checkpoint = _meta_tensors(json.load(handle))
    with open(args.lora_shapes) as handle:
        lora = _meta_tensors(json.load(handle))
    prefix = comfy.model_detection.unet_prefix_from_state_dict(checkpoint)
    config = comfy.model_detection.model_config_from_unet(checkpoint, prefix)
    if config is None:
        return {"model_config": None}
    meta = torch.device("meta")
    base_model = config.get_model({}, prefix, device=meta)
    target = config.clip_target(state_dict=checkpoint)
    text_model = target.clip(**target.params, device=meta, dtype=torch.float32, model_options={})
    with captured(LOAD_MESSAGES) as unet_log:
        base_model.load_model_weights(dict(checkpoint), prefix)
    clip_missing, clip_unexpected = text_model.load_state_dict(config.process_clip_state_dict(dict(checkpoint)),
                                                               strict=False)
    key_map = lora_key_map(base_model, text_model)
    with captured(LORA_MESSAGES) as lora_log:
        patches = comfy.lora.load_lora(lora, key_map)
    shapes = {**{k: list(v.shape) for k, v in base_model.state_dict().items()},
              **{k: list(v.shape) for k, v in text_model.state_dict().items()}}
    names = {key.split(".", 1)[0] for key in lora}  # kohya module names hold no dots
    targets = {name: key_map.get(name) for name in sorted(names)}
    return {"model_config": type(config).__name__, "unet_log": unet_log,
            "clip_missing": clip_missing, "clip_unexpected": clip_unexpected,
            "key_names": len(key_map), "lora_log": lora_log, "patched": len(patches),
            "targets": targets, "target_shapes": {n: shapes.get(t) for n, t in targets.items() if t is not None}}


def cmd_resave(args) -> dict:
    """Load a checkpoint and write it back with ComfyUI's own Save Checkpoint code."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(args.ckpt, output_vae=True, output_clip=True,
                                                               embedding_directory=None)
    comfy.sd.save_checkpoint(args.out, model, clip, vae)
    return {"model_config": type(model.model.model_config).__name__, "unet_dtype": str(model.model.get_dtype())}


async def _load_pack(pack: str) -> dict:
    import nodes

    await nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
    built_in = set(nodes.NODE_CLASS_MAPPINGS)
    with captured(("",)) as log:
        loaded = await nodes.load_custom_node(pack, ignore=built_in)
    added = {name: cls for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if name not in built_in}
    inputs = {}
    for name, cls in added.items():
        try:
            inputs[name] = sorted(cls.INPUT_TYPES().get("required", {}))
        except Exception as error:  # reported, so the test can say which node's inputs fail
            inputs[name] = f"{type(error).__name__}: {error}"
    return {"loaded": loaded, "built_in": len(built_in), "nodes": sorted(added),
            "display_names": {name: nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name) for name in added},
            "required_inputs": inputs,
            "warnings": [entry for entry in log if entry["level"] in ("WARNING", "ERROR", "CRITICAL")]}


def cmd_nodes(args) -> dict:
    """Load the folder as ComfyUI loads a custom-node pack, after ComfyUI's built-in nodes."""
    return asyncio.run(_load_pack(args.pack))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    sample = verbs.add_parser("sample", help="load a checkpoint, sample, optionally with a LoRA")
    sample.add_argument("--ckpt", required=True)
    sample.add_argument("--lora")
    sample.add_argument("--steps", type=int, default=1)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--size", type=int, default=64, help="image side in pixels")
    sample.add_argument("--prompt", default="a photo of sks dog")
    sample.add_argument("--weights-of", nargs="*", default=[], help="LoRA module names whose patched weight to save")
    sample.add_argument("--weights-out", help=".safetensors file for those weights")
    keymap = verbs.add_parser("keymap", help="detect and key-map a model given only tensor shapes")
    keymap.add_argument("--checkpoint-shapes", required=True, help="JSON {checkpoint key: shape}")
    keymap.add_argument("--lora-shapes", required=True, help="JSON {LoRA key: shape}")
    resave = verbs.add_parser("resave", help="load a checkpoint and save it with ComfyUI's save_checkpoint")
    resave.add_argument("--ckpt", required=True)
    resave.add_argument("--out", required=True)
    pack = verbs.add_parser("nodes", help="load a folder as a custom-node pack")
    pack.add_argument("--pack", required=True)
    args = parser.parse_args()

    use_cpu()
    commands = {"sample": cmd_sample, "keymap": cmd_keymap, "resave": cmd_resave, "nodes": cmd_nodes}
    result = commands[args.verb](args)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
