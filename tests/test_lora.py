"""LoRA: peft injection, kohya file layout, reading, baking into weights, and refusing misfits."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from trainers.checkpoint.conditioning import Conditioning, encode_prompts, predict_noise
from trainers.checkpoint.families import FAMILIES
from trainers.checkpoint.keymap import UNET_PREFIX
from trainers.checkpoint.test_models import build_random_components
from trainers.checkpoint.writer import to_original_state_dict
from trainers.errors import BoothError
from trainers.files import load_tensors, read_safetensors_header
from trainers.lora import (LoraModule, LoraSettings, LoraWeights, add_lora, apply_lora, has_lora, lora_parameters,
                           lora_state_dict, merge_lora, read_lora, remove_lora, save_lora)

EVERYTHING = LoraSettings(rank=4, alpha=8.0, unet_targets=("attention", "feed_forward", "projections", "conv"),
                          text_encoder=True)
PROMPTS = ["a photo of sks dog", "a watercolour of a house"]

_TRANSFORMER = r"transformer_blocks_\d+_(attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2)|proj_in|proj_out"
KOHYA_RULES = {
    "diffusers_unet": re.compile(rf"^lora_unet_(down_blocks_\d+|mid_block|up_blocks_\d+)_"
                                 rf"(attentions_\d+_({_TRANSFORMER})|resnets_\d+_(conv1|conv2|conv_shortcut)|(downsamplers|upsamplers)_0_conv)$"),
    "ldm_unet": re.compile(rf"^lora_unet_(input_blocks_\d+_\d+|middle_block_\d+|output_blocks_\d+_\d+)_"
                           rf"({_TRANSFORMER}|in_layers_2|out_layers_3|skip_connection|op|conv)$"),
    "text": re.compile(r"^(lora_te|lora_te1|lora_te2)_text_model_encoder_layers_\d+_"
                       r"(self_attn_(q_proj|k_proj|v_proj|out_proj)|mlp_fc1|mlp_fc2)$"),
}


def adapted(family: str, settings: LoraSettings = EVERYTHING, seed: int = 0):
    """Tiny components with a LoRA whose up matrices are non-zero (peft starts them at zero)."""
    components = build_random_components(family, variant="tiny", seed=7)
    params = add_lora(components, settings, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for param in params:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return components


def unet_output(components) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    config = components.unet.config
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 8, config.cross_attention_dim, generator=generator)
    pooled = None
    if components.family == "sdxl":
        width = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        pooled = torch.randn(2, width, generator=generator)
    with torch.no_grad():
        return predict_noise(components, latents, torch.tensor([10, 700]), Conditioning(context, pooled), (64, 64))


def text_output(components) -> Conditioning:
    with torch.no_grad():
        return encode_prompts(components, PROMPTS)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def all_weights(components) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.clone() for i, m in enumerate([components.unet, *components.text_encoders])
            for k, v in m.state_dict().items()}


def expected_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Kohya name -> weight shape, derived independently of trainers.lora: ComfyUI's rule (original UNet
    key, dots to underscores) plus, for SD1/SD2, the diffusers parameter names."""
    components = build_random_components(family, variant="tiny")
    shapes = {}
    for key, value in to_original_state_dict(components).items():
        if key.startswith(UNET_PREFIX) and key.endswith(".weight"):
            shapes["lora_unet_" + key[len(UNET_PREFIX):-len(".weight")].replace(".", "_")] = tuple(value.shape)
    if family != "sdxl":
        for key, value in components.unet.state_dict().items():
            shapes["lora_unet_" + key.removesuffix(".weight").replace(".", "_")] = tuple(value.shape)
    prefixes = ["lora_te_"] if family != "sdxl" else ["lora_te1_", "lora_te2_"]
    for prefix, encoder in zip(prefixes, components.text_encoders):
        for key, value in encoder.state_dict().items():
            path = "text_model." + key.removeprefix("text_model.")
            shapes[prefix + path.removesuffix(".weight").replace(".", "_")] = tuple(value.shape)
    return shapes


# ---- file layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_saved_keys_follow_kohya_rules_and_name_real_layers(family, tmp_path):
    path = save_lora(adapted(family), EVERYTHING, tmp_path / "booth.safetensors")
    tensors, _ = load_tensors(path)
    shapes = expected_shapes(family)
    unet_rule = KOHYA_RULES["ldm_unet" if family == "sdxl" else "diffusers_unet"]
    text_prefixes = ("lora_te1_", "lora_te2_") if family == "sdxl" else ("lora_te_",)
    names = {key.partition(".")[0] for key in tensors}
    for name in names:
        rule = KOHYA_RULES["text"] if name.startswith("lora_te") else unet_rule
        assert rule.match(name), name
        assert name.startswith(("lora_unet_", *text_prefixes)), name
        down, up, alpha = (tensors[f"{name}.{s}"] for s in ("lora_down.weight", "lora_up.weight", "alpha"))
        out, inputs, *kernel = shapes[name]
        assert tuple(down.shape) == ((4, inputs, *kernel) if kernel else (4, inputs)), name
        assert tuple(up.shape) == ((out, 4, 1, 1) if kernel else (out, 4)), name
        assert alpha.shape == () and float(alpha) == 8.0
    assert len(tensors) == 3 * len(names)
    assert {p for p in text_prefixes if any(n.startswith(p) for n in names)} == set(text_prefixes)
    if family == "sdxl":
        assert {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_unet_middle_block_1_proj_in",
                "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2", "lora_unet_input_blocks_1_0_in_layers_2",
                "lora_unet_input_blocks_3_0_op", "lora_unet_output_blocks_2_2_conv"} <= names
    else:
        assert {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                "lora_unet_down_blocks_0_resnets_0_conv1", "lora_unet_down_blocks_0_downsamplers_0_conv",
                "lora_unet_up_blocks_1_attentions_2_proj_out", "lora_te_text_model_encoder_layers_2_mlp_fc2"} <= names


def _expected_count(components, target: str) -> int:
    unet = components.unet.modules()
    if target == "attention":
        return 8 * sum(isinstance(m, BasicTransformerBlock) for m in unet)
    if target == "feed_forward":
        return 2 * sum(isinstance(m, BasicTransformerBlock) for m in unet)
    if target == "projections":
        return 2 * sum(isinstance(m, Transformer2DModel) for m in unet)
    if target == "conv":
        return sum(2 + (m.conv_shortcut is not None) if isinstance(m, ResnetBlock2D)
                   else isinstance(m, (Downsample2D, Upsample2D)) for m in unet)
    return sum(6 * encoder.config.num_hidden_layers for encoder in components.text_encoders)


@pytest.mark.parametrize("family", FAMILIES)
def test_module_counts_per_target_set(family):
    components = build_random_components(family, variant="tiny")
    for target in ("attention", "feed_forward", "projections", "conv", "text"):
        settings = LoraSettings(rank=2, unet_targets=() if target == "text" else (target,),
                                text_encoder=target == "text")
        add_lora(components, settings)
        modules = [k for k in lora_state_dict(components, settings) if k.endswith(".alpha")]
        assert len(modules) == _expected_count(components, target) > 0, target
        remove_lora(components)


@pytest.mark.parametrize("family", FAMILIES)
def test_file_applied_at_strength_one_reproduces_adapted_model(family, tmp_path):
    trained = adapted(family)
    path = save_lora(trained, EVERYTHING, tmp_path / "booth.safetensors", dtype=torch.float32)
    base = build_random_components(family, variant="tiny", seed=7)
    assert relative_error(unet_output(base), unet_output(trained)) > 0.05  # the LoRA really changes things
    assert apply_lora(base, read_lora(path), strength=1.0) == []
    assert relative_error(unet_output(base), unet_output(trained)) <= 1e-4
    ours, theirs = text_output(base), text_output(trained)
    assert relative_error(ours.context, theirs.context) <= 1e-4
    if family == "sdxl":
        assert relative_error(ours.pooled, theirs.pooled) <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_kohya_reader_agrees_with_our_unet(family, tmp_path):
    """An independent consumer of kohya files (diffusers' converter) rebuilds the same adapted UNet."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    trained = adapted(family)
    path = save_lora(trained, EVERYTHING, tmp_path / "booth.safetensors", dtype=torch.float32)
    other = build_random_components(family, variant="tiny", seed=7)
    reader = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    extra = {"unet_config": other.unet.config} if family == "sdxl" else {}
    tensors, alphas = reader.lora_state_dict(str(path), **extra)[:2]
    other.unet.load_lora_adapter({k: v for k, v in tensors.items() if k.startswith("unet.")},
                                 network_alphas={k: v for k, v in alphas.items() if k.startswith("unet.")},
                                 prefix="unet", adapter_name="other")
    assert relative_error(unet_output(other), unet_output(trained)) <= 1e-5


def test_alternative_names_readers_accept_bake_identically():
    """SD1.x LoRAs reach ComfyUI with original-layout UNet names and ``lora_te1_`` text names too."""
    lora = read_lora(lora_state_dict(adapted("sd15"), EVERYTHING))
    components = build_random_components("sd15", variant="tiny")
    diffusers_to_ldm = dict(zip(*_sd15_name_pairs(components)))
    renamed = LoraWeights({diffusers_to_ldm.get(name, name.replace("lora_te_", "lora_te1_")): module
                           for name, module in lora.modules.items()})
    assert sum(name.startswith("lora_unet_input_blocks_") for name in renamed.modules) > 10
    assert sum(name.startswith("lora_te1_text_model_") for name in renamed.modules) == 18
    first, second = build_random_components("sd15", variant="tiny"), build_random_components("sd15", variant="tiny")
    assert apply_lora(first, lora) == [] and apply_lora(second, renamed) == []
    assert all(torch.equal(a, b) for a, b in zip(all_weights(first).values(), all_weights(second).values()))


def _sd15_name_pairs(components):
    """(diffusers-style names, original-style names) of the UNet's weights, in matching order."""
    from trainers.checkpoint.keymap import unet_key_map

    keys = [k for k in components.unet.state_dict() if k.endswith(".weight")]
    mapping = unet_key_map(components.unet.config, keys)
    return (["lora_unet_" + k.removesuffix(".weight").replace(".", "_") for k in keys],
            ["lora_unet_" + mapping[k].removesuffix(".weight").replace(".", "_") for k in keys])


# ---- strengths, LoCon, dtype, metadata ---------------------------------------------------------

def test_strength_zero_changes_nothing_and_text_strength_is_separate():
    lora = read_lora(lora_state_dict(adapted("sd15"), EVERYTHING))
    components = build_random_components("sd15", variant="tiny")
    before = all_weights(components)
    apply_lora(components, lora, strength=0.0)
    assert all(torch.equal(before[k], v) for k, v in all_weights(components).items())
    apply_lora(components, lora, strength=0.5, text_strength=0.0)
    after = all_weights(components)
    assert all(torch.equal(before[k], v) for k, v in after.items() if k.startswith("1."))
    assert sum(not torch.equal(before[k], v) for k, v in after.items() if k.startswith("0.")) > 50


def test_half_strength_bakes_half_the_update():
    components = adapted("sd15", LoraSettings(rank=2, alpha=1.0, unet_targets=("conv",)))
    lora = read_lora(lora_state_dict(components, LoraSettings(rank=2, alpha=1.0, unet_targets=("conv",))))
    module = lora.modules["lora_unet_down_blocks_0_resnets_0_conv1"]
    base = build_random_components("sd15", variant="tiny", seed=7)
    layer = base.unet.down_blocks[0].resnets[0].conv1
    original = layer.weight.clone()
    apply_lora(base, lora, strength=0.5)
    expected = original + 0.5 * 0.5 * torch.einsum("or,rikl->oikl", module.up[:, :, 0, 0], module.down)
    assert torch.allclose(layer.weight, expected, atol=1e-6)


def test_locon_round_trip_with_3x3_down_and_1x1_up(tmp_path):
    settings = LoraSettings(rank=4, alpha=4.0, unet_targets=("conv",))
    trained = adapted("sdxl", settings)
    path = save_lora(trained, settings, tmp_path / "locon.safetensors", dtype=torch.float32)
    tensors, meta = load_tensors(path)
    assert tuple(tensors["lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight"].shape) == (4, 32, 3, 3)
    assert tuple(tensors["lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight"].shape) == (32, 4, 1, 1)
    assert tuple(tensors["lora_unet_output_blocks_0_0_skip_connection.lora_down.weight"].shape) == (4, 128, 1, 1)
    assert tuple(tensors["lora_unet_input_blocks_3_0_op.lora_down.weight"].shape) == (4, 32, 3, 3)
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "4"}
    base = build_random_components("sdxl", variant="tiny", seed=7)
    assert apply_lora(base, read_lora(path)) == []
    assert relative_error(unet_output(base), unet_output(trained)) <= 1e-4


def test_tucker_mid_matches_running_the_three_convolutions():
    generator = torch.Generator().manual_seed(0)
    down, mid, up = (torch.randn(shape, generator=generator) for shape in ((3, 5, 1, 1), (3, 3, 3, 3), (6, 3, 1, 1)))
    x = torch.randn(1, 5, 7, 7, generator=generator)
    chained = torch.nn.functional.conv2d(torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down), mid,
                                                                    padding=1), up)
    module = LoraModule(down, up, alpha=3.0, mid=mid)
    assert module.weight_shape == (6, 5, 3, 3)
    assert torch.allclose(torch.nn.functional.conv2d(x, module.delta(), padding=1), chained, atol=1e-4)


def test_fp16_default_dtype_and_metadata(tmp_path):
    settings = LoraSettings(rank=4, alpha=2.0, unet_targets=("attention",), text_encoder=True, dropout=0.1)
    path = save_lora(adapted("sd2", settings), settings, tmp_path / "subject.safetensors",
                     metadata={"ss_steps": "500", "ss_training_comment": "sks dog"})
    header, meta = read_safetensors_header(path)
    assert {entry["dtype"] for entry in header.values()} == {"F16"}
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2")
    assert (meta["ss_base_model_version"], meta["ss_v2"]) == ("sd_v2", "True")
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-512/lora"  # the epsilon SD2 variant
    assert meta["ss_v_parameterization"] == "False"
    assert meta["modelspec.implementation"] == "diffusers" and meta["modelspec.title"] == "subject"
    assert (meta["ss_steps"], meta["ss_training_comment"]) == ("500", "sks dog")
    assert meta["ss_network_dropout"] == "0.1" and "ss_network_args" not in meta
    assert json.loads(meta["booth.lora_settings"])["unet_targets"] == ["attention"]
    lora = read_lora(path)
    assert lora.family == "sd2" and lora.metadata["ss_steps"] == "500"
    assert all(m.down.dtype == torch.float16 and m.alpha == 2.0 for m in lora.modules.values())


@pytest.mark.parametrize("family, ss_version, implementation", [
    ("sd15", "sd_v1", "diffusers"), ("sdxl", "sdxl_base_v1-0", "https://github.com/Stability-AI/generative-models")])
def test_family_metadata(family, ss_version, implementation, tmp_path):
    settings = LoraSettings(rank=2)
    _, meta = read_safetensors_header(save_lora(adapted(family, settings), settings, tmp_path / "x.safetensors"))
    assert (meta["ss_base_model_version"], meta["ss_v2"]) == (ss_version, "False")
    assert meta["modelspec.implementation"] == implementation


def test_save_refuses_other_suffix_and_missing_adapter(tmp_path):
    components = adapted("sd15", LoraSettings(rank=2))
    with pytest.raises(BoothError, match=r"must end in \.safetensors"):
        save_lora(components, LoraSettings(rank=2), tmp_path / "x.ckpt")
    with pytest.raises(BoothError, match="differ from the adapter"):
        save_lora(components, LoraSettings(rank=3), tmp_path / "x.safetensors")
    remove_lora(components)
    with pytest.raises(BoothError, match="no LoRA adapter"):
        save_lora(components, LoraSettings(rank=2), tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---- training-side behaviour -------------------------------------------------------------------

def test_only_lora_parameters_train_and_init_is_seeded():
    components = build_random_components("sdxl", variant="tiny")
    baseline = unet_output(components)
    params = add_lora(components, EVERYTHING, seed=5)
    trainable = [p for m in (components.unet, components.vae, *components.text_encoders)
                 for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params} and len(params) == len(set(map(id, params)))
    assert [id(p) for p in lora_parameters(components)] == [id(p) for p in params]
    downs, ups = params[0::2], params[1::2]
    assert all(p.abs().sum() == 0 for p in ups) and all(p.abs().sum() > 0 for p in downs)
    assert torch.equal(unet_output(components), baseline)  # up = 0: training starts at the base model
    again = build_random_components("sdxl", variant="tiny")
    assert all(torch.equal(a, b) for a, b in zip(params, add_lora(again, EVERYTHING, seed=5)))
    other = build_random_components("sdxl", variant="tiny")
    assert not torch.equal(params[0], add_lora(other, EVERYTHING, seed=6)[0])


def test_gradients_reach_every_used_lora_parameter_with_gradient_checkpointing():
    components = adapted("sdxl")
    components.unet.enable_gradient_checkpointing()
    for encoder in components.text_encoders:
        encoder.activation_checkpointing_enable()
    for module in (components.unet, *components.text_encoders):
        module.train()
    cond = encode_prompts(components, PROMPTS)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    predict_noise(components, latents, torch.tensor([10, 500]), cond, (64, 64)).square().mean().backward()
    # SDXL reads CLIP-L's penultimate layer, so LoRA on its last layer never receives a gradient.
    last_clip_l_layer = components.text_encoders[0].encoder.layers[-1]
    unused = {id(p) for p in last_clip_l_layer.parameters() if p.requires_grad}
    assert len(unused) == 12
    for param in lora_parameters(components):
        if id(param) in unused:
            assert param.grad is None
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0


def test_adapters_are_float32_on_a_half_precision_model():
    components = build_random_components("sd15", variant="tiny")
    components.unet.half()
    params = add_lora(components, LoraSettings(rank=4, unet_targets=("attention", "conv")))
    assert {p.dtype for p in params} == {torch.float32}
    assert components.unet.conv_in.weight.dtype == torch.float16
    with torch.no_grad():
        for param in params[1::2]:
            param.fill_(0.01)
    context = Conditioning(torch.randn(1, 8, 32, dtype=torch.float16))
    out = predict_noise(components, torch.randn(1, 4, 8, 8, dtype=torch.float16), torch.tensor([10]), context, (64, 64))
    assert out.dtype == torch.float16 and bool(out.isfinite().all())


def test_merge_bakes_the_adapter_and_remove_restores_the_base():
    merged = adapted("sd2")
    expected_unet, expected_text = unet_output(merged), text_output(merged).context
    merge_lora(merged)
    assert not has_lora(merged) and not hasattr(merged.unet, "peft_config")
    assert relative_error(unet_output(merged), expected_unet) <= 1e-5
    assert relative_error(text_output(merged).context, expected_text) <= 1e-5
    removed = adapted("sd2")
    remove_lora(removed)
    base = build_random_components("sd2", variant="tiny", seed=7)
    assert set(removed.unet.state_dict()) == set(base.unet.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(all_weights(removed).values(), all_weights(base).values()))
    add_lora(removed, LoraSettings(rank=2))  # a fresh adapter can follow
    with pytest.raises(BoothError, match="already carries a LoRA"):
        add_lora(removed, LoraSettings(rank=2))


def test_apply_bakes_under_a_training_adapter():
    """Training on top of a merged LoRA: baking must reach the base weights inside peft's wrapper."""
    lora = read_lora(lora_state_dict(adapted("sd15"), EVERYTHING))
    wrapped = build_random_components("sd15", variant="tiny")
    add_lora(wrapped, EVERYTHING)
    plain = build_random_components("sd15", variant="tiny")
    assert apply_lora(wrapped, lora) == [] and apply_lora(plain, lora) == []
    remove_lora(wrapped)
    assert all(torch.equal(a, b) for a, b in zip(all_weights(wrapped).values(), all_weights(plain).values()))


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    (LoraSettings(rank=0), "rank must be a whole number of at least 1, not 0"),
    (LoraSettings(rank=2.5), "rank must be a whole number"),
    (LoraSettings(rank=100), r"rank 100 is larger than the smallest targeted layer .*allows at most 32"),
    (LoraSettings(rank=40, unet_targets=("conv",)),
     r"rank 40 is larger .*\(down_blocks\.0\.resnets\.0\.conv1: \(32, 32, 3, 3\) allows at most 32\)"),
    (LoraSettings(alpha=0), "alpha must be a number above 0"),
    (LoraSettings(alpha=-4.0), "alpha must be a number above 0"),
    (LoraSettings(unet_targets=("attention", "mlp")), "unet_targets has unknown name 'mlp'; choose from attention"),
    (LoraSettings(unet_targets="attention"), "unet_targets must be a list"),
    (LoraSettings(unet_targets=(), text_encoder=False), "nothing to train"),
    (LoraSettings(dropout=1.0), "dropout must be at least 0 and below 1"),
])
def test_bad_settings_are_refused_without_touching_the_model(settings, message):
    components = build_random_components("sd15", variant="tiny")
    with pytest.raises(BoothError, match=message):
        add_lora(components, settings)
    assert not has_lora(components)


@pytest.mark.parametrize("lora_family, model_family, first_module", [
    ("sd15", "sdxl", r"First mismatching module: lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k "
                     r"updates a weight of shape \(64, 32\), the model's layer has \(64, 96\)"),
    ("sdxl", "sd15", r"First mismatching module: lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k "
                     r"updates a weight of shape \(64, 96\), the model's layer has \(64, 32\)"),
])
def test_lora_for_another_family_is_refused_naming_both(lora_family, model_family, first_module):
    labels = {"sd15": "Stable Diffusion 1.x", "sdxl": "Stable Diffusion XL base"}
    tensors = lora_state_dict(adapted(lora_family), EVERYTHING)
    model = build_random_components(model_family, variant="tiny")
    before = all_weights(model)
    for metadata in ({"ss_base_model_version": "sd_v1" if lora_family == "sd15" else "sdxl_base_v1-0"}, {}):
        lora = read_lora(tensors, metadata=metadata)
        expected = labels[lora_family] if metadata or lora_family == "sdxl" else "another model"
        with pytest.raises(BoothError) as error:
            apply_lora(model, lora)
        text = str(error.value)
        assert f"LoRA for {expected}" in text and f"the model is {labels[model_family]}" in text
        assert re.search(first_module, text), text
    assert all(torch.equal(before[k], v) for k, v in all_weights(model).items())


def test_lora_matching_nothing_is_refused_and_partial_matches_are_reported():
    tensors = lora_state_dict(adapted("sd15"), EVERYTHING)
    first_level = {k: v for k, v in tensors.items() if k.startswith("lora_unet_down_blocks_0_attentions_")}
    with pytest.raises(BoothError, match=r"None of its 24 modules names a layer .*first: lora_unet_down_blocks_0_"):
        apply_lora(build_random_components("sdxl", variant="tiny"), read_lora(first_level))  # SDXL's level 0 has none
    extra = dict(tensors, **{f"lora_unet_not_a_layer.{k.partition('.')[2]}": v for k, v in tensors.items()
                             if k.startswith("lora_unet_down_blocks_0_resnets_0_conv1.")})
    assert apply_lora(build_random_components("sd15", variant="tiny"), read_lora(extra)) == ["lora_unet_not_a_layer"]


def test_read_lora_accepts_kohya_only_and_defaults_alpha_to_rank(tmp_path):
    down, up = torch.ones(2, 32), torch.ones(32, 2)
    lora = read_lora({"lora_te_text_model_encoder_layers_0_mlp_fc2.lora_down.weight": torch.ones(2, 64),
                      "lora_te_text_model_encoder_layers_0_mlp_fc2.lora_up.weight": up})
    assert lora.modules["lora_te_text_model_encoder_layers_0_mlp_fc2"].scale == 1.0
    with pytest.raises(BoothError, match=r"not a LoRA in the kohya layout \(key 'unet\.a\.lora_A\.weight'\)"):
        read_lora({"unet.a.lora_A.weight": down})
    with pytest.raises(BoothError, match="module x lacks its lora_up weight"):
        read_lora({"x.lora_down.weight": down})
    with pytest.raises(BoothError, match="module x has inconsistent shapes"):
        read_lora({"x.lora_down.weight": down, "x.lora_up.weight": torch.ones(32, 3)})
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(BoothError, match="damaged.safetensors"):
        read_lora(damaged)
