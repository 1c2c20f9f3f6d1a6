"""Report what a real ComfyUI does with Booth's files, as one JSON line on stdout.

Run by tests/test_comfyui.py with ComfyUI's own Python, the ComfyUI checkout as working directory
and on PYTHONPATH. It only observes and reports; every assertion lives in the test module, so a
failure there shows what ComfyUI saw. Always on CPU, so results do not depend on the machine.

    python comfy_probe.py sample --ckpt MODEL [--lora LORA --weights-of NAME ... --weights-out FILE]
    python comfy_probe.py keymap --checkpoint-shapes JSON --lora-shapes JSON
    python comfy_probe.py resave --ckpt MODEL --out FILE
    python comfy_probe.py nodes --pack FOLDER
    python comfy_probe.py train-node --ckpt MODEL --pack FOLDER --root DIR [--method M ...] [--compare]
                                     [--cancel-by flag|hook ...]
    python comfy_probe.py dreambooth-node --ckpt MODEL --pack FOLDER --root DIR [--steps N ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

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
def captured(prefixes: tuple[str, ...], level: int = logging.DEBUG):
    """Collect ComfyUI's log records starting with ``prefixes`` (from ``level`` up) while the block runs."""
    found: list[dict] = []
    root = logging.getLogger()
    handler, previous = _Collector(prefixes, found), root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield found
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


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


def patched_weight(patcher, key: str):
    """ComfyUI's own patched value of one weight. Newer releases return it (``return_weight``); older
    ones only write it into the model, so it is read there and the original weights put back."""
    import inspect
    import comfy.utils

    if "return_weight" in inspect.signature(patcher.patch_weight_to_device).parameters:
        return patcher.patch_weight_to_device(key, return_weight=True)
    patcher.patch_weight_to_device(key)
    weight = comfy.utils.get_attr(patcher.model, key).detach().clone()
    patcher.unpatch_model()
    return weight


def cmd_sample(args) -> dict:
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
        patched[name] = patched_weight(patcher, key_map[name]).float().contiguous()
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


# ---- train-node: Booth's training node run as ComfyUI's executor runs it ---------------------------

SUBJECT_FOLDER = "subject"
TRAINER_NODE_ID = "7"


def _use_folders(root: Path) -> dict[str, Path]:
    """Point ComfyUI's loras, checkpoints, input and output folders into ``root`` (the nodes read them
    through folder_paths)."""
    import folder_paths

    folders = {name: root / name for name in ("loras", "checkpoints", "input", "output")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for kind in ("loras", "checkpoints"):
        folder_paths.add_model_folder_path(kind, str(folders[kind]), is_default=True)
    folder_paths.set_input_directory(str(folders["input"]))
    folder_paths.set_output_directory(str(folders["output"]))
    return folders


def _write_subject(folder: Path, count: int = 3) -> None:
    """Synthetic subject photos: a coloured square on a background that differs per image."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.full((96, 80, 3), 60 + 50 * index, dtype=np.uint8)
        pixels[24:72, 16:64] = (200, 40 + 60 * index, 30)
        Image.fromarray(pixels).save(folder / f"subject_{index}.png")


class _ProgressHook:
    """Stands in for the server's progress hook (comfy.utils.PROGRESS_BAR_HOOK): records every call and,
    if asked, presses Cancel once the bar reaches ``cancel_at``. ``cancel_by`` "flag" only sets
    the interrupt flag (the node must notice it itself); "hook" does what the server's hook does
    when the flag is set: raise InterruptProcessingException from inside the bar update."""

    def __init__(self, cancel_at: int | None = None, cancel_by: str = "flag"):
        self.calls: list[dict] = []
        self.cancel_at, self.cancel_by = cancel_at, cancel_by

    def __call__(self, value, total, preview, prompt_id=None, node_id=None):
        import comfy.model_management

        self.calls.append({"value": value, "total": total, "preview": preview is not None, "node": node_id})
        if self.cancel_at is not None and value >= self.cancel_at:
            self.cancel_at = None
            comfy.model_management.interrupt_current_processing(True)
            if self.cancel_by == "hook":
                comfy.model_management.throw_exception_if_processing_interrupted()


def _live_tensor_bytes() -> int:
    """Bytes of every CPU tensor storage Python still references (each storage counted once)."""
    import gc
    import torch

    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":  # type(): no deprecated __class__ hooks
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _leftovers(root: Path) -> list[str]:
    """Temporary files an interrupted write would leave (Booth writes through '.<name>.*.tmp')."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.name.endswith(".tmp"))


def _lora_file_report(path: Path) -> dict:
    """How ComfyUI's own loader sees a LoRA file (no Booth code involved)."""
    import hashlib
    import comfy.utils

    if not path.is_file():
        return {"exists": False}
    lora = comfy.utils.load_torch_file(str(path), safe_load=True)
    return {"exists": True, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "tensors": len(lora),
            "finite": all(bool(t.float().isfinite().all()) for t in lora.values()),
            "max_abs_up": max(float(t.float().abs().max()) for k, t in lora.items() if k.endswith("lora_up.weight"))}


def _run_trainer(trainer, graph: dict, widgets: dict, hook: _ProgressHook) -> tuple[dict, dict | None]:
    """Run the training node as the executor does (inference mode, node id given, hook installed);
    return what happened and the node's output (None if it raised)."""
    import torch
    import comfy.model_management
    import comfy.utils

    before = _live_tensor_bytes()
    comfy.utils.set_progress_bar_global_hook(hook)
    output, error = None, None
    try:
        with captured(LORA_MESSAGES, logging.WARNING) as lora_log, torch.inference_mode():
            output = trainer().train(**graph, **widgets, unique_id=TRAINER_NODE_ID)
    except (Exception, comfy.model_management.InterruptProcessingException) as raised:
        error = raised  # kept while memory is measured, as ComfyUI keeps it for its report
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    report = {"hook_calls": hook.calls, "lora_log": lora_log,
              "error_type": type(error).__name__ if error else None, "error": str(error) if error else None,
              "interrupted_flag_after": comfy.model_management.processing_interrupted(),
              "live_tensor_bytes_before": before, "live_tensor_bytes_after": _live_tensor_bytes()}
    return report, output


def _outputs_report(output: dict, graph: dict, lora_file: Path, args) -> dict:
    """The node's outputs, and what ComfyUI's own LoRA loader and sampler make of its file and MODEL."""
    import comfy.sd
    import comfy.utils

    model, clip, vae = graph["model"], graph["clip"], graph["vae"]
    model_out, clip_out, lora_name, curve = output["result"]
    report = {"ui": output["ui"], "lora_name": lora_name,
              "curve": image_report(curve) | {"dtype": str(curve.dtype), "min": float(curve.min()),
                                              "max": float(curve.max())},
              "unet_patched": len(model_out.patches) - len(model.patches),
              "clip_patched": len(clip_out.patcher.patches) - len(clip.patcher.patches),
              "file": _lora_file_report(lora_file)}
    lora = comfy.utils.load_torch_file(str(lora_file), safe_load=True)
    with captured(LORA_MESSAGES, logging.WARNING) as lora_log:
        loaded_model, loaded_clip = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    report["load_lora_for_models"] = {"log": lora_log, "unet_patched": len(loaded_model.patches) - len(model.patches),
                                      "clip_patched": len(loaded_clip.patcher.patches) - len(clip.patcher.patches)}
    if args.compare:
        base = generate(model, clip, vae, 1, args.seed, args.resolution, args.prompt)
        trained = generate(model_out, clip_out, vae, 1, args.seed, args.resolution, args.prompt)
        report["compare"] = {"base": image_report(base), "trained": image_report(trained),
                             "mean_abs_pixel_diff": float((trained - base).abs().mean() * 255.0)}
    return report


def cmd_train_node(args) -> dict:
    """Booth Load Instance Images -> Booth Train LoRA on a loaded checkpoint, as ComfyUI would run them;
    then what ComfyUI makes of the results, a second run under the same name, and cancelled runs."""
    import nodes

    root = Path(args.root)
    folders = _use_folders(root)
    graph, report = _load_graph(args, folders)
    trainer = nodes.NODE_CLASS_MAPPINGS["BoothTrainLoRA"]
    widgets = {"lora_name": args.lora_name, "method": args.method, "steps": args.steps,
               "learning_rate": args.learning_rate, "rank": args.rank, "alpha": float(args.rank),
               "class_prompt": "a photo of dog", "num_class_images": args.num_class_images,
               "prior_loss_weight": 1.0, "seed": 0}

    if args.train:
        report["train"], output = _run_trainer(trainer, graph, widgets, _ProgressHook())
        report["loras"] = sorted(path.name for path in folders["loras"].iterdir())
        if output is not None:
            lora_file = folders["loras"] / output["result"][2]
            report["train"] |= _outputs_report(output, graph, lora_file, args)
            del output  # let its patched models go before the next run is measured
            report["same_name_again"], _ = _run_trainer(trainer, graph, widgets, _ProgressHook())
            report["same_name_again"]["file"] = _lora_file_report(lora_file)

    report["cancelled"] = {}
    for cancel_by in args.cancel_by:
        name = f"{args.lora_name}_cancel_by_{cancel_by}"
        run, _ = _run_trainer(trainer, graph, widgets | {"lora_name": name, "steps": args.cancel_steps},
                              _ProgressHook(cancel_at=1, cancel_by=cancel_by))
        report["cancelled"][cancel_by] = run | {"lora_name": f"{name}.safetensors",
                                                "file": _lora_file_report(folders["loras"] / f"{name}.safetensors")}
    report["leftover_temp_files"] = _leftovers(root)
    return report


def _load_graph(args, folders: dict[str, Path]) -> tuple[dict, dict]:
    """What Load Checkpoint and Booth Load Instance Images give the training node: (inputs, report)."""
    import torch
    import comfy.sd
    import nodes

    _write_subject(folders["input"] / SUBJECT_FOLDER)
    asyncio.run(nodes.load_custom_node(args.pack))
    loader = nodes.NODE_CLASS_MAPPINGS["BoothLoadInstanceImages"]
    with torch.inference_mode():  # the executor runs Load Checkpoint and every other node in inference mode
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(args.ckpt, output_vae=True, output_clip=True,
                                                                   embedding_directory=None)
        dataset, preview, count = loader().load(SUBJECT_FOLDER, args.prompt, args.resolution, "center", False,
                                                False, 1)
    report = {"image_count": count, "preview": image_report(preview) | {"dtype": str(preview.dtype)}}
    return {"model": model, "clip": clip, "vae": vae, "dataset": dataset}, report


def _checkpoint_file_report(path: Path) -> dict:
    """A saved checkpoint as ComfyUI's Load Checkpoint sees it: detection, load messages, dtypes, metadata."""
    import comfy.sd
    from safetensors import safe_open

    if not path.is_file():
        return {"exists": False}
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        dtypes = sorted({str(handle.get_slice(key).get_dtype()) for key in handle.keys()})
    with captured(LOAD_MESSAGES) as load_log:
        model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True,
                                                              embedding_directory=None)
    return {"exists": True, "bytes": path.stat().st_size, "dtypes": dtypes, "load_log": load_log,
            "model_config": type(model.model.model_config).__name__, "prediction": model.model.model_type.name,
            "metadata": {key: value for key, value in metadata.items() if key.startswith(("booth.", "modelspec."))
                         and key != "booth.config"}}


def cmd_dreambooth_node(args) -> dict:
    """Booth Load Instance Images -> Booth Train DreamBooth on a loaded checkpoint, as ComfyUI would run them;
    then what Load Checkpoint makes of the saved file, and KSampler of the node's MODEL and CLIP."""
    import nodes

    root = Path(args.root)
    folders = _use_folders(root)
    graph, report = _load_graph(args, folders)
    trainer = nodes.NODE_CLASS_MAPPINGS["BoothTrainDreamBooth"]
    widgets = {"checkpoint_name": args.checkpoint_name, "prior_preservation": False, "steps": args.steps,
               "learning_rate": args.learning_rate, "class_prompt": "a photo of dog", "num_class_images": 1,
               "prior_loss_weight": 1.0, "seed": 0, "extract_lora_rank": args.extract_lora_rank}
    report["train"], output = _run_trainer(trainer, graph, widgets, _ProgressHook())
    report["checkpoints"] = sorted(path.name for path in folders["checkpoints"].iterdir())
    report["loras"] = sorted(path.name for path in folders["loras"].iterdir())
    if output is not None:
        model_out, clip_out, checkpoint_name, lora_name, curve = output["result"]
        base = generate(graph["model"], graph["clip"], graph["vae"], 1, args.seed, args.resolution, args.prompt)
        trained = generate(model_out, clip_out, graph["vae"], 1, args.seed, args.resolution, args.prompt)
        report["train"] |= {"ui": output["ui"], "checkpoint_name": checkpoint_name, "lora_name": lora_name,
                            "curve": image_report(curve),
                            "model_out": type(model_out.model.model_config).__name__,
                            "compare": {"base": image_report(base), "trained": image_report(trained),
                                        "mean_abs_pixel_diff": float((trained - base).abs().mean() * 255.0)},
                            "file": _checkpoint_file_report(folders["checkpoints"] / checkpoint_name),
                            "base_bytes": Path(args.ckpt).stat().st_size}
        if lora_name:
            report["train"]["lora_file"] = _lora_file_report(folders["loras"] / lora_name)
    report["leftover_temp_files"] = _leftovers(root)
    return report


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
    train = verbs.add_parser("train-node", help="run Booth's image loader and training node on a checkpoint")
    train.add_argument("--ckpt", required=True)
    train.add_argument("--pack", required=True, help="the pack's folder inside a custom_nodes folder")
    train.add_argument("--root", required=True, help="folder for ComfyUI's loras/, input/ and output/ folders")
    train.add_argument("--method", default="lora")
    train.add_argument("--lora-name", default="booth_test")
    train.add_argument("--steps", type=int, default=2)
    train.add_argument("--resolution", type=int, default=64)
    train.add_argument("--rank", type=int, default=4, help="also the alpha")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--num-class-images", type=int, default=1)
    train.add_argument("--seed", type=int, default=0, help="sampling seed for --compare")
    train.add_argument("--prompt", default="a photo of sks dog")
    train.add_argument("--no-train", dest="train", action="store_false", help="only the cancelled runs")
    train.add_argument("--compare", action="store_true", help="sample 1 euler step with the base and trained model")
    train.add_argument("--cancel-by", nargs="*", default=[], choices=["flag", "hook"],
                       help="also run a training cancelled after its first step, once per way of cancelling")
    train.add_argument("--cancel-steps", type=int, default=3, help="steps asked of a run that will be cancelled")
    dreambooth = verbs.add_parser("dreambooth-node", help="run Booth's DreamBooth node on a checkpoint")
    dreambooth.add_argument("--ckpt", required=True)
    dreambooth.add_argument("--pack", required=True, help="the pack's folder inside a custom_nodes folder")
    dreambooth.add_argument("--root", required=True, help="folder for ComfyUI's model, input and output folders")
    dreambooth.add_argument("--checkpoint-name", default="booth_dreambooth_test")
    dreambooth.add_argument("--steps", type=int, default=1)
    dreambooth.add_argument("--resolution", type=int, default=64)
    dreambooth.add_argument("--learning-rate", type=float, default=1e-4)
    dreambooth.add_argument("--extract-lora-rank", type=int, default=0)
    dreambooth.add_argument("--seed", type=int, default=0, help="sampling seed for the comparison")
    dreambooth.add_argument("--prompt", default="a photo of sks dog")
    args = parser.parse_args()

    use_cpu()
    commands = {"sample": cmd_sample, "keymap": cmd_keymap, "resave": cmd_resave, "nodes": cmd_nodes,
                "train-node": cmd_train_node, "dreambooth-node": cmd_dreambooth_node}
    result = commands[args.verb](args)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
