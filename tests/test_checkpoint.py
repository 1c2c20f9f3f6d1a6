"""Checkpoint I/O: exact round trips, agreement with diffusers' own converter, dtypes, EMA."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from trainers.checkpoint.families import detect
from trainers.checkpoint.loader import ema_key, load_components
from trainers.checkpoint.writer import save_checkpoint, to_original_state_dict
from trainers.errors import BoothError
from trainers.files import load_tensors

FAMILIES = ("sd15", "sd2", "sdxl")


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_bit_exact_with_every_key_mapped(family, tiny_checkpoint, tmp_path):
    original, _ = load_tensors(tiny_checkpoint(family))
    components = load_components(tiny_checkpoint(family))
    back = to_original_state_dict(components)
    assert set(back) == set(original), "keys missing or left over"
    assert [k for k in original if not torch.equal(original[k], back[k])] == []
    assert components.extra_state.keys() <= {k for k in original if "position_ids" in k or "logit_scale" in k
                                             or k.endswith("model.text_projection")}
    saved = save_checkpoint(components, tmp_path / "again.safetensors")
    again, meta = load_tensors(saved)
    assert all(torch.equal(again[k], original[k]) for k in original) and set(again) == set(original)
    assert meta["modelspec.prediction_type"] == "epsilon"


@pytest.mark.parametrize("family", FAMILIES)
def test_unet_and_vae_match_diffusers_converter(family, tiny_checkpoint):
    from diffusers.loaders import single_file_utils as reference

    original, _ = load_tensors(tiny_checkpoint(family))
    components = load_components(tiny_checkpoint(family))
    for ours, converted in (
        (components.unet.state_dict(), reference.convert_ldm_unet_checkpoint(dict(original), dict(components.unet.config))),
        (components.vae.state_dict(), reference.convert_ldm_vae_checkpoint(dict(original), dict(components.vae.config))),
    ):
        assert set(ours) == set(converted)
        assert all(torch.equal(ours[k], converted[k]) for k in ours)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_openclip_text_encoder_matches_diffusers_converter(family, tiny_checkpoint):
    from diffusers.loaders import single_file_utils as reference

    original, _ = load_tensors(tiny_checkpoint(family))
    components = load_components(tiny_checkpoint(family))
    encoder = components.text_encoders[-1]
    prefix = "cond_stage_model.model." if family == "sd2" else "conditioner.embedders.1.model."
    converted = reference.convert_open_clip_checkpoint(encoder, dict(original), prefix=prefix)
    converted = converted.state_dict() if hasattr(converted, "state_dict") else converted
    ours = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    theirs = {k.removeprefix("text_model."): v for k, v in converted.items()}
    common = set(ours) & set(theirs)
    assert len(common) >= len(ours) - 8  # diffusers drops SD2's last layer, which we keep
    assert all(torch.equal(ours[k], theirs[k]) for k in common)


def test_state_dict_in_memory_equals_file(tiny_checkpoint):
    state, _ = load_tensors(tiny_checkpoint("sd15"))
    from_memory = load_components(dict(state), name="graph model")
    from_file = load_components(tiny_checkpoint("sd15"))
    a, b = from_memory.unet.state_dict(), from_file.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dtypes_fp16_file_and_cast(tiny_checkpoint, tmp_path):
    components = load_components(tiny_checkpoint("sd15"))
    half = save_checkpoint(components, tmp_path / "half.safetensors", dtype=torch.float16)
    tensors, _ = load_tensors(half)
    assert {v.dtype for k, v in tensors.items() if "position_ids" not in k} == {torch.float16}
    loaded = load_components(half)
    assert next(loaded.unet.parameters()).dtype == torch.float16
    as_fp32 = load_components(half, dtype=torch.float32)
    assert next(as_fp32.text_encoders[0].parameters()).dtype == torch.float32
    bf16 = load_components(tiny_checkpoint("sd15"), dtype=torch.bfloat16)
    assert next(bf16.vae.parameters()).dtype == torch.bfloat16


def test_ema_weights_used_only_when_asked(tiny_checkpoint, tmp_path):
    state, _ = load_tensors(tiny_checkpoint("sd15"))
    ema = {ema_key(k): v + 1.0 for k, v in state.items() if k.startswith("model.diffusion_model.")}
    path = tmp_path / "with_ema.safetensors"
    save_file({**state, **ema, "model_ema.decay": torch.tensor(0.9999)}, str(path))
    key = "conv_in.weight"
    plain = load_components(path)
    with_ema = load_components(path, use_ema=True)
    assert torch.equal(with_ema.unet.state_dict()[key], plain.unet.state_dict()[key] + 1.0)
    assert not any(k.startswith("model_ema.") for k in plain.extra_state)
    with pytest.raises(BoothError, match="no EMA weights"):
        load_components(tiny_checkpoint("sd15"), use_ema=True)


def test_prediction_type_from_file_setting_and_sd2_guess(tiny_checkpoint, tmp_path):
    from trainers.checkpoint.test_models import make_test_checkpoint

    v_model = make_test_checkpoint("sd2", tmp_path / "v.safetensors", variant="tiny", prediction_type="v_prediction")
    assert load_components(v_model).scheduler.config.prediction_type == "v_prediction"
    assert load_components(v_model, prediction_type="epsilon").prediction_type == "epsilon"
    state, _ = load_tensors(tiny_checkpoint("sd2"))
    assert detect(state, "x", {}).prediction_type is None  # SD2 weights alone do not tell
    assert load_components(dict(state)).prediction_type == "epsilon"  # random norms read as epsilon
    with pytest.raises(BoothError, match="prediction_type must be one of"):
        load_components(v_model, prediction_type="flow")


@pytest.mark.parametrize("family", FAMILIES)
def test_text_conditioning_and_unet_forward_are_finite(family, tiny_checkpoint):
    from trainers.checkpoint.conditioning import encode_prompts, predict_noise

    components = load_components(tiny_checkpoint(family))
    cond = encode_prompts(components, ["a photo of sks dog", ""])
    width = components.text_encoders[0].config.hidden_size + (
        components.text_encoders[1].config.hidden_size if family == "sdxl" else 0)
    assert cond.context.shape == (2, 77, width)
    assert (cond.pooled is not None) == (family == "sdxl")
    out = predict_noise(components, torch.randn(2, 4, 8, 8), torch.tensor([1, 999]), cond, (64, 64))
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


@pytest.mark.slow
def test_full_sd15_random_model_loads_and_runs(full_sd15):
    from trainers.checkpoint.conditioning import encode_prompts, predict_noise
    from trainers.checkpoint.families import detect as detect_family

    state, _ = load_tensors(full_sd15)
    detected = detect_family(state)
    assert (detected.family, detected.variant) == ("sd15", "full")
    assert sum(v.numel() for k, v in state.items() if "position_ids" not in k) == pytest.approx(1.066e9, rel=0.01)
    del state
    components = load_components(full_sd15, dtype=torch.float32)
    with torch.inference_mode():
        cond = encode_prompts(components, ["a photo of sks dog"])
        out = predict_noise(components, torch.randn(1, 4, 64, 64), torch.tensor([500]), cond, (512, 512))
    assert out.shape == (1, 4, 64, 64) and torch.isfinite(out).all()
    assert 0.01 < float(out.std()) < 100
