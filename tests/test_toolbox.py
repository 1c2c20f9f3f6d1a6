"""The LoRA toolbox: reading every common layout, baking, combining, resizing, extracting, describing, refusing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainers.checkpoint.keymap import unet_key_map
from trainers.checkpoint.loader import load_components
from trainers.checkpoint.writer import save_checkpoint
from trainers.cli import main
from trainers.errors import BoothError
from trainers.lora import LoraSettings, add_lora, remove_lora, save_lora
from trainers.lora.layouts import COMFYUI, DIFFUSERS_OLD, KOHYA, LYCORIS, PEFT, looks_like_lora, read_lora_file
from trainers.lora.names import name_index, underscored, weight_layers
from trainers.lora.toolbox import (LoraChoice, bake_checkpoint, bake_into_components, combine_loras, describe_lora,
                                   extract_lora, lora_for_family, resize_lora)
from trainers.sampling import SampleSettings, generate

EVERYTHING = LoraSettings(rank=4, alpha=8.0, unet_targets=("attention", "feed_forward", "projections", "conv"),
                          text_encoder=True)
SMALL = LoraSettings(rank=2, alpha=1.0, unet_targets=("attention",), text_encoder=True)
LINEAR, CONV_3X3, CONV_1X1, TEXT = ("attn2_to_k", "resnets_0_conv1", "attentions_0_proj_in", "layers_0_mlp_fc1")


def adapt(components, settings: LoraSettings, seed: int) -> None:
    """Add a LoRA whose factors are all random (peft starts up at zero, which would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in add_lora(components, settings, seed=seed):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def write_lora(base, settings: LoraSettings, seed: int, path):
    components = load_components(base)
    adapt(components, settings, seed)
    return save_lora(components, settings, path, dtype=torch.float32)


@pytest.fixture(scope="module")
def sd15(tiny_checkpoint):
    return tiny_checkpoint("sd15")


@pytest.fixture(scope="module")
def loras(sd15, tmp_path_factory):
    """Two SD1.5 LoRAs of different shapes: every layer at rank 4 (alpha 8), attention + text at rank 2 (alpha 1)."""
    folder = tmp_path_factory.mktemp("loras")
    return (write_lora(sd15, EVERYTHING, 1, folder / "every_layer.safetensors"),
            write_lora(sd15, SMALL, 2, folder / "small.safetensors"))


def update(tensors: dict[str, torch.Tensor], name: str, shape) -> torch.Tensor:
    """``alpha / rank * up @ down`` of one module, computed from the file's tensors by the kohya rule."""
    down, up = tensors[f"{name}.lora_down.weight"].double(), tensors[f"{name}.lora_up.weight"].double()
    alpha = float(tensors[f"{name}.alpha"]) if f"{name}.alpha" in tensors else down.shape[0]
    return (alpha / down.shape[0] * (up.flatten(1) @ down.flatten(1))).reshape(shape)


def module_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    return sorted({key.split(".", 1)[0] for key in tensors})


def layer_weights(components) -> dict[str, torch.Tensor]:
    """Kohya name -> weight of that layer, as float64 copies; one name per layer (for SD1.5, the
    diffusers-style names Booth writes, which the index lists before the other styles)."""
    weights, seen = {}, set()
    for name, (_, layer) in name_index(components).items():
        if id(layer) not in seen:
            seen.add(id(layer))
            weights[name] = layer.weight.detach().double().clone()
    return weights


def pick(names, ending: str) -> str:
    return next(name for name in names if name.endswith(ending))


# ---- baking ------------------------------------------------------------------------------------

def test_baked_checkpoint_is_base_plus_strength_times_scaled_update(sd15, loras, tmp_path):
    every, _ = loras
    out = bake_checkpoint(sd15, [LoraChoice(every, 0.7, -0.4)], tmp_path / "baked.safetensors")["output"]
    before, after = layer_weights(load_components(sd15)), layer_weights(load_components(out))
    tensors = load_file(str(every))
    names = module_names(tensors)
    assert len(names) == 123
    for ending in (LINEAR, CONV_3X3, CONV_1X1, TEXT):
        name = pick(names, ending)
        strength = -0.4 if name.startswith("lora_te") else 0.7
        expected = before[name] + strength * update(tensors, name, before[name].shape)
        assert (after[name] - before[name]).abs().max() > 1e-2, name
        torch.testing.assert_close(after[name], expected, rtol=0, atol=2e-6, msg=name)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in names}  # only the LoRA's layers (here: diffusers-style names)


def test_baking_then_sampling_equals_sampling_with_the_lora_unbaked(sd15, tmp_path):
    unbaked = load_components(sd15)
    adapt(unbaked, EVERYTHING, 5)
    lora = save_lora(unbaked, EVERYTHING, tmp_path / "lora.safetensors", dtype=torch.float32)
    baked = load_components(bake_checkpoint(sd15, [LoraChoice(lora)], tmp_path / "baked.safetensors")["output"])
    settings = SampleSettings(steps=3, height=32, width=32, scheduler="euler")
    ours, reference = (generate(model, ["a photo of sks dog"], seed=3, settings=settings) for model in (baked, unbaked))
    remove_lora(unbaked)
    plain = generate(unbaked, ["a photo of sks dog"], seed=3, settings=settings)
    assert (plain - reference).abs().max() > 1e-2  # the LoRA changes the image
    assert (ours - reference).abs().max() <= 1e-4


def test_bake_writes_dtype_and_records_the_loras(sd15, loras, tmp_path):
    every, small = loras
    out = bake_checkpoint(sd15, [LoraChoice(every, 0.5), LoraChoice(small, 1.0, 0.0)], tmp_path / "half.safetensors",
                          dtype=torch.float16)["output"]
    header = load_file(str(out))
    assert {value.dtype for value in header.values() if value.is_floating_point()} == {torch.float16}
    from trainers.files import read_safetensors_header

    merged = json.loads(read_safetensors_header(out)[1]["booth.merged_loras"])
    assert merged == [{"file": "every_layer.safetensors", "strength": 0.5, "text_strength": 0.5},
                      {"file": "small.safetensors", "strength": 1.0, "text_strength": 0.0}]
    with pytest.raises(BoothError, match="already exists"):
        bake_checkpoint(sd15, [LoraChoice(every)], out)
    with pytest.raises(BoothError, match="is one of the inputs"):
        bake_checkpoint(sd15, [LoraChoice(every)], sd15, overwrite=True)


# ---- combining and resizing --------------------------------------------------------------------

def test_concatenation_is_exact_and_its_rank_is_the_sum(loras, tmp_path):
    every, small = loras
    result = combine_loras([LoraChoice(every, 0.7, 0.3), LoraChoice(small, -1.2)])
    assert result.kept_share == 1.0 and result.modules == {}
    from trainers.lora.layouts import save_lora_file

    combined = load_file(str(save_lora_file(result.lora, tmp_path / "sum.safetensors", dtype=torch.float32)))
    first, second = load_file(str(every)), load_file(str(small))
    assert module_names(combined) == module_names(first)  # small's modules are a subset of every's
    for name in module_names(combined):
        shape = tuple(first[f"{name}.lora_up.weight"].shape[:1]) + tuple(first[f"{name}.lora_down.weight"].shape[1:])
        text = name.startswith("lora_te")
        expected = (0.3 if text else 0.7) * update(first, name, shape)
        rank = 4
        if f"{name}.lora_down.weight" in second:
            expected = expected - 1.2 * update(second, name, shape)
            rank = 6
        assert combined[f"{name}.lora_down.weight"].shape[0] == rank, name
        torch.testing.assert_close(update(combined, name, shape), expected, rtol=0, atol=1e-6, msg=name)


def test_svd_recompression_keeps_the_best_rank_r_sum_and_reports_its_share(loras):
    every, small = loras
    result = combine_loras([LoraChoice(every), LoraChoice(small)], rank=3)
    first, second = load_file(str(every)), load_file(str(small))
    kept = total = 0.0
    for name in module_names(second):
        shape = tuple(first[f"{name}.lora_up.weight"].shape[:1]) + tuple(first[f"{name}.lora_down.weight"].shape[1:])
        dense = (update(first, name, shape) + update(second, name, shape)).flatten(1)
        values = torch.linalg.svdvals(dense)
        module = result.lora.modules[name]
        ours = module.delta().double().flatten(1) * module.scale
        assert module.rank == 3
        assert float((dense - ours).norm()) == pytest.approx(float(values[3:].norm()), rel=1e-4, abs=1e-6)
        assert result.modules[name].kept_share == pytest.approx(float(values[:3].norm() / values.norm()), rel=1e-5)
    for name, share in result.modules.items():
        kept += float(share.singular_values[: share.rank].square().sum())
        total += float(share.singular_values.square().sum())
    assert result.kept_share == pytest.approx((kept / total) ** 0.5)
    assert 0.5 < result.kept_share < 1.0


def test_resize_to_full_rank_is_lossless_and_lower_rank_is_the_svd_optimum(loras):
    every, _ = loras
    original = read_lora_file(every)
    full, lower = resize_lora(every, rank=4), resize_lora(every, rank=2)
    assert full.ranks == {4: 123} and lower.ranks == {2: 123}
    for name, module in original.modules.items():
        reference = module.delta().double().flatten(1) * module.scale
        same = full.lora.modules[name]
        torch.testing.assert_close(same.delta().double().flatten(1) * same.scale, reference, rtol=0, atol=1e-6)
        u, s, vh = torch.linalg.svd(reference, full_matrices=False)
        optimum = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
        cut = lower.lora.modules[name]
        torch.testing.assert_close(cut.delta().double().flatten(1) * cut.scale, optimum, rtol=0, atol=1e-5)
        assert lower.modules[name].kept_share == pytest.approx(float(s[:2].norm() / s.norm()), rel=1e-5)
        assert tuple(cut.weight_shape) == tuple(module.weight_shape)  # conv modules stay [r, in, 3, 3] / [out, r, 1, 1]


def test_resize_by_kept_share_picks_the_smallest_rank_reaching_it(loras):
    every, _ = loras
    result = resize_lora(every, keep=0.9)
    for name, share in result.modules.items():
        shares = (share.singular_values.square().cumsum(0) / share.singular_values.square().sum()).sqrt()
        assert shares[share.rank - 1] >= 0.9 - 1e-9
        assert share.rank == 1 or shares[share.rank - 2] < 0.9
        assert result.lora.modules[name].rank == share.rank
    assert len(result.ranks) > 1  # random modules need different ranks
    with pytest.raises(BoothError, match="keep must be a share above 0 and at most 1"):
        resize_lora(every, keep=1.5)
    with pytest.raises(BoothError, match="Give a rank"):
        resize_lora(every)


# ---- layouts -----------------------------------------------------------------------------------

def _diffusers_paths(components) -> dict[str, str]:
    """Kohya UNet name -> diffusers module path, for every Linear/Conv2d of the UNet (adapted or not)."""
    return {"lora_unet_" + underscored(path): path for path in weight_layers(components.unet)}


def _as_peft_by_diffusers(components, tmp_path):
    """diffusers' own writer (save_lora_weights) with peft's state dicts and LoraConfigs."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import get_peft_model_state_dict

    encoder = components.text_encoders[0]
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(components.unet, adapter_name="booth"),
        text_encoder_lora_layers=get_peft_model_state_dict(encoder, adapter_name="booth"),
        unet_lora_adapter_metadata=components.unet.peft_config["booth"].to_dict(),
        text_encoder_lora_adapter_metadata=encoder.peft_config["booth"].to_dict())
    return tmp_path / "pytorch_lora_weights.safetensors"


def _as_comfyui_trainer(kohya: dict[str, torch.Tensor], components, tmp_path):
    """ComfyUI's Train LoRA + Save LoRA Weights: ``diffusion_model.<original path>`` names, factors as
    matrices (a 3x3 convolution's down is [rank, in * 9]), whole differences as .diff/.diff_b."""
    paths = _diffusers_paths(components)
    original = unet_key_map(components.unet.config, [path + ".weight" for path in paths.values()])
    tensors = {}
    for name in module_names(kohya):
        if name.startswith("lora_unet_"):
            ldm = "diffusion_model." + original[paths[name] + ".weight"].removesuffix(".weight")
            tensors[f"{ldm}.lora_down.weight"] = kohya[f"{name}.lora_down.weight"].flatten(1)
            tensors[f"{ldm}.lora_up.weight"] = kohya[f"{name}.lora_up.weight"].flatten(1)
            tensors[f"{ldm}.alpha"] = kohya[f"{name}.alpha"]
    norm = unet_key_map(components.unet.config, ["down_blocks.0.resnets.0.norm1.weight"])
    norm_path = "diffusion_model." + norm["down_blocks.0.resnets.0.norm1.weight"].removesuffix(".weight")
    tensors[f"{norm_path}.diff"] = torch.full((components.unet.down_blocks[0].resnets[0].norm1.weight.numel(),), 0.25)
    tensors[f"{norm_path}.diff_b"] = torch.full_like(tensors[f"{norm_path}.diff"], -0.5)
    path = tmp_path / "comfyui_trained.safetensors"
    save_file(tensors, str(path))
    return path


def _as_old_diffusers(kohya: dict[str, torch.Tensor], components, tmp_path):
    """diffusers' attention-processor files: ``attn1.processor.to_q_lora.down.weight``, no alpha (= rank)."""
    paths = _diffusers_paths(components)
    tensors = {}
    for name in module_names(kohya):
        path = paths.get(name, "")
        if ".attn" in path:
            processor = path.replace(".to_out.0", ".to_out").replace(".to_", ".processor.to_")
            scale = float(kohya[f"{name}.alpha"]) / kohya[f"{name}.lora_down.weight"].shape[0]
            tensors[f"unet.{processor}_lora.down.weight"] = kohya[f"{name}.lora_down.weight"]
            tensors[f"unet.{processor}_lora.up.weight"] = kohya[f"{name}.lora_up.weight"] * scale
    path = tmp_path / "attn_procs.safetensors"
    save_file(tensors, str(path))
    return path


def _as_lycoris(kohya: dict[str, torch.Tensor], tmp_path):
    """SimpleTuner's LyCORIS naming: ``lycoris_`` + the diffusers path (UNet only)."""
    tensors = {key.replace("lora_unet_", "lycoris_", 1): value for key, value in kohya.items()
               if key.startswith("lora_unet_")}
    path = tmp_path / "lycoris.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("layout", [KOHYA, PEFT, COMFYUI, DIFFUSERS_OLD, LYCORIS])
def test_every_layout_reads_into_the_same_baked_weights(sd15, layout, tmp_path):
    adapted = load_components(sd15)
    settings = EVERYTHING if layout != PEFT else LoraSettings(rank=4, alpha=8.0, unet_targets=("attention", "conv"),
                                                                 text_encoder=True)
    adapt(adapted, settings, 9)
    kohya_path = save_lora(adapted, settings, tmp_path / "kohya.safetensors", dtype=torch.float32)
    kohya = load_file(str(kohya_path))
    written = {KOHYA: lambda: kohya_path, PEFT: lambda: _as_peft_by_diffusers(adapted, tmp_path),
               COMFYUI: lambda: _as_comfyui_trainer(kohya, adapted, tmp_path),
               DIFFUSERS_OLD: lambda: _as_old_diffusers(kohya, adapted, tmp_path),
               LYCORIS: lambda: _as_lycoris(kohya, tmp_path)}[layout]()
    remove_lora(adapted)

    lora = read_lora_file(written)
    assert lora.layouts == (layout,) and lora.unknown == []
    assert looks_like_lora(written)
    ours = load_components(sd15)
    summary = bake_into_components(ours, [LoraChoice(lora)])[0]
    assert summary["left_out"] == []
    covered = {name for name in module_names(kohya) if layout in (KOHYA, PEFT)
               or (name.startswith("lora_unet_") and (layout != DIFFUSERS_OLD or "_attn" in name))}
    assert summary["unet_modules"] + summary["text_modules"] == len(covered)
    expected = load_components(sd15)
    subset = {key: value for key, value in kohya.items() if key.split(".", 1)[0] in covered}
    bake_into_components(expected, [LoraChoice(read_lora_file(subset))])
    if layout == COMFYUI:
        norm = expected.unet.down_blocks[0].resnets[0].norm1
        norm.weight += 0.25
        norm.bias -= 0.5
        assert summary["whole_differences"] == 2
    for part, reference in zip((ours.unet, *ours.text_encoders), (expected.unet, *expected.text_encoders)):
        theirs = reference.state_dict()
        for key, value in part.state_dict().items():
            torch.testing.assert_close(value, theirs[key], rtol=0, atol=1e-6, msg=key)


def test_sdxl_kohya_lora_with_both_text_encoders_is_read_and_fits(tiny_checkpoint, tmp_path):
    path = write_lora(tiny_checkpoint("sdxl"), SMALL, 3, tmp_path / "sdxl.safetensors")
    lora = read_lora_file(path)
    prefixes = {name.split("_text_model")[0] for name in lora.modules if name.startswith("lora_te")}
    assert prefixes == {"lora_te1", "lora_te2"}
    fitted, left_out = lora_for_family(path, "sdxl", "tiny")
    assert left_out == [] and len(fitted.modules) == len(lora.modules)
    info = describe_lora(path)
    assert (info["family"], info["variant"]) == ("sdxl", "tiny")
    assert set(info["modules_per_part"]) == {"unet", "text_encoder", "text_encoder_2"}


def test_unknown_keys_are_listed_and_refused_unless_skipped(sd15, loras, tmp_path):
    every, _ = loras
    tensors = load_file(str(every))
    loha = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {k: v for k, v in tensors.items() if not k.startswith(loha + ".")}
    tensors.update({f"{loha}.hada_w1_a": torch.ones(8, 2), f"{loha}.hada_w1_b": torch.ones(2, 8)})
    path = tmp_path / "with_loha.safetensors"
    save_file(tensors, str(path))
    assert read_lora_file(path).unknown == [f"{loha}.hada_w1_a", f"{loha}.hada_w1_b"]
    with pytest.raises(BoothError, match=rf"2 of its keys or modules would be left out, nothing was merged: "
                                         rf"{loha}.hada_w1_a, {loha}.hada_w1_b\. .*skip_unknown"):
        bake_checkpoint(sd15, [LoraChoice(path)], tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    done = bake_checkpoint(sd15, [LoraChoice(path)], tmp_path / "out.safetensors", skip_unknown=True)
    assert done["loras"][0]["left_out"] == [f"{loha}.hada_w1_a", f"{loha}.hada_w1_b"]
    assert done["loras"][0]["unet_modules"] + done["loras"][0]["text_modules"] == 122


# ---- refusals ----------------------------------------------------------------------------------

def test_sdxl_lora_into_sd15_is_refused_naming_both_families_and_the_module(tiny_checkpoint, sd15, tmp_path):
    sdxl_lora = write_lora(tiny_checkpoint("sdxl"), SMALL, 4, tmp_path / "sdxl.safetensors")
    for skip in (False, True):
        with pytest.raises(BoothError, match=r"it is a LoRA for Stable Diffusion XL base, the model is Stable "
                                             r"Diffusion 1\.x\. First mismatching module: lora_\w+ "):
            bake_checkpoint(sd15, [LoraChoice(sdxl_lora)], tmp_path / "out.safetensors", skip_unknown=skip)
    assert not (tmp_path / "out.safetensors").exists()


def test_text_encoder_lora_for_another_encoder_width_is_refused(tmp_path):
    """A text-encoder-only LoRA for SD 2.x's 1024-wide OpenCLIP, without metadata, offered to SD 1.x (768)."""
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    path = tmp_path / "sd2_text.safetensors"
    save_file({f"{name}.lora_down.weight": torch.ones(4, 1024), f"{name}.lora_up.weight": torch.ones(1024, 4),
               f"{name}.alpha": torch.tensor(4.0)}, str(path))
    assert describe_lora(path)["family"] == "sd2"
    with pytest.raises(BoothError, match=rf"it is a LoRA for Stable Diffusion 2\.x, the model is Stable Diffusion "
                                         rf"1\.x\. First mismatching module: {name} updates a weight of shape "
                                         rf"\(1024, 1024\), the model's layer has \(768, 768\)"):
        lora_for_family(path, "sd15")


def test_loras_for_different_families_are_not_combined(tiny_checkpoint, loras, tmp_path):
    every, _ = loras
    sdxl_lora = write_lora(tiny_checkpoint("sdxl"), SMALL, 4, tmp_path / "sdxl.safetensors")
    with pytest.raises(BoothError, match=r"Cannot combine .*sdxl.safetensors \(a LoRA for Stable Diffusion XL base\) "
                                         r"with .*every_layer.safetensors \(a LoRA for Stable Diffusion 1\.x\)\. "
                                         r"First mismatching module: lora_"):
        combine_loras([LoraChoice(every), LoraChoice(sdxl_lora)])


def test_a_file_that_is_no_lora_is_refused(sd15):
    assert not looks_like_lora(sd15)
    with pytest.raises(BoothError, match="is not a LoRA Booth can read"):
        read_lora_file(sd15)


# ---- extraction --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(sd15, tmp_path_factory):
    """The base with full-rank noise on every weight matrix and convolution, and one bias moved."""
    components = load_components(sd15)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for model in (components.unet, *components.text_encoders):
            for module in model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                    module.weight += torch.randn(module.weight.shape, generator=generator) * 0.02
        components.unet.conv_in.bias += 0.1
    return save_checkpoint(components, tmp_path_factory.mktemp("tuned") / "tuned.safetensors")


def _extracted_layers(base, result) -> tuple[dict, dict]:
    baked = load_components(base)
    bake_into_components(baked, [LoraChoice(result.lora)])
    return layer_weights(baked), {name: None for name in result.lora.modules}


def test_extract_at_full_rank_reproduces_the_tuned_weights(sd15, tuned):
    result = extract_lora(sd15, tuned, rank=10_000, conv=True)
    assert result.kept_share == pytest.approx(1.0, abs=1e-9)
    baked, names = _extracted_layers(sd15, result)
    target = layer_weights(load_components(tuned))
    assert any(name.startswith("lora_te_") for name in names) and any(name.endswith(CONV_3X3) for name in names)
    for name in names:
        assert float((baked[name] - target[name]).norm() / target[name].norm()) <= 1e-4, name
    assert any("lies in parameters these LoRA layers cannot carry" in note for note in result.notes)


def test_extract_at_low_rank_keeps_the_share_it_reports(sd15, tuned):
    result = extract_lora(sd15, tuned, rank=8)
    assert set(result.ranks) == {8}
    baked, names = _extracted_layers(sd15, result)
    base, target = layer_weights(load_components(sd15)), layer_weights(load_components(tuned))
    kept = sum(float((baked[n] - base[n]).square().sum()) for n in names)
    whole = sum(float((target[n] - base[n]).square().sum()) for n in names)
    assert (kept / whole) ** 0.5 == pytest.approx(result.kept_share, rel=1e-4)
    assert 0.2 < result.kept_share < 0.95  # random noise is far from low rank
    assert result.kept_share_at(4) < result.kept_share < result.kept_share_at(16)
    assert json.loads(result.lora.metadata["booth.extracted"])["kept_share"] == round(result.kept_share, 6)
    assert not any(name.endswith(CONV_3X3) for name in names)  # convolutions only with conv=True


def test_extract_refuses_identical_and_unrelated_models(sd15, tiny_checkpoint):
    with pytest.raises(BoothError, match="identical weights in every layer a LoRA can hold"):
        extract_lora(sd15, sd15)
    with pytest.raises(BoothError, match="is Stable Diffusion XL base but the base .* is Stable Diffusion 1.x"):
        extract_lora(sd15, tiny_checkpoint("sdxl"))


# ---- command line ------------------------------------------------------------------------------

def test_cli_merge_resize_extract_and_inspect(sd15, loras, tuned, tmp_path, capsys):
    every, small = loras
    baked = tmp_path / "baked.safetensors"
    assert main(["merge", "--base", str(sd15), "--lora", str(every), "0.5", "--lora", str(small), "1", "0",
                 "--out", str(baked)]) == 0
    assert "every_layer.safetensors: strength 0.5 (text 0.5), 105 UNet + 18 text-encoder modules" in \
        capsys.readouterr().out
    assert main(["merge", "--lora", str(every), "--lora", str(small), "--rank", "3", "--out",
                 str(tmp_path / "combined.safetensors")]) == 0
    assert "123 modules (123 at rank 3)" in capsys.readouterr().out
    assert main(["resize", str(every), "--rank", "2", "--out", str(tmp_path / "r2.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ranks"] == {"2": 123}
    assert main(["extract", "--base", str(sd15), "--tuned", str(tuned), "--rank", "8",
                 "--out", str(tmp_path / "extracted.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert "at rank 8)" in printed and "rank 4:" in printed and "rank 16:" in printed
    assert main(["inspect", str(tmp_path / "extracted.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["family"], info["ranks"], info["layouts"], info["dtypes"]) == ("sd15", {"8": 90}, ["kohya"],
                                                                              {"F16": 270})
    assert main(["inspect", str(every)]) == 0
    printed = capsys.readouterr().out
    assert "LoRA for:        Stable Diffusion 1.x" in printed and "rank:            4 (123 modules)" in printed
    assert main(["resize", str(every), "--out", str(tmp_path / "r.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: Give a rank")
    assert main(["merge", "--lora", str(every), "x", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "strengths must be numbers" in capsys.readouterr().err
