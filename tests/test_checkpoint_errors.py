"""Every file people pick by mistake gets one clear message, never a deep stack trace."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from trainers.checkpoint.loader import load_components
from trainers.errors import BoothError
from trainers.files import load_tensors


def _variant(tiny_checkpoint, tmp_path, name, change):
    state, _ = load_tensors(tiny_checkpoint("sd15"))
    state = change(dict(state))
    path = tmp_path / name
    save_file(state, str(path))
    return path


CASES = {
    "inpainting": (lambda s: {**s, "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 9, 3, 3)},
                   "inpainting model"),
    "sd3": (lambda s: {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(4, 4)},
            "Stable Diffusion 3"),
    "flux": (lambda s: {"double_blocks.0.img_attn.qkv.weight": torch.zeros(4, 4)}, "Flux"),
    "lora": (lambda s: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
             "is a LoRA"),
    "vae": (lambda s: {k.removeprefix("first_stage_model."): v for k, v in s.items() if k.startswith("first_stage_model.")},
            "VAE on its own"),
    "refiner": (lambda s: {**{k: v for k, v in s.items() if not k.startswith("cond_stage_model.")},
                           "conditioner.embedders.0.model.token_embedding.weight": torch.zeros(4, 4)}, "SDXL refiner"),
    "no_text_encoder": (lambda s: {k: v for k, v in s.items() if not k.startswith("cond_stage_model.")},
                        "no text encoder"),
    "missing_unet_weight": (lambda s: {k: v for k, v in s.items() if "middle_block.1.proj_out" not in k},
                            "incomplete: 2 UNet weights are missing"),
    "wrong_shape": (lambda s: {**s, "model.diffusion_model.out.2.bias": torch.zeros(5)}, "has shape"),
    "other_tensors": (lambda s: {"weight": torch.zeros(3)}, "not a Stable Diffusion checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_kind_of_file_is_named(case, tiny_checkpoint, tmp_path):
    change, message = CASES[case]
    path = _variant(tiny_checkpoint, tmp_path, f"{case} model.safetensors", change)
    with pytest.raises(BoothError, match=message) as error:
        load_components(path)
    assert case == "no_text_encoder" or "model.safetensors" in str(error.value)


def test_truncated_safetensors(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint("sd15").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BoothError, match="truncated or corrupt"):
        load_components(path)


def test_hostile_header_is_refused_before_allocation(tmp_path):
    path = tmp_path / "hostile.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[100000,100000,100000],"data_offsets":[0,16]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(BoothError, match="truncated or corrupt: tensor 'w'"):
        load_tensors(path)


def test_text_file_and_wrong_suffix(tmp_path):
    fake = tmp_path / "notes.safetensors"
    fake.write_text("this is not a model")
    with pytest.raises(BoothError, match="not a valid safetensors file"):
        load_components(fake)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x00" * 16)
    with pytest.raises(BoothError, match="unsupported file type"):
        load_components(other)
    with pytest.raises(BoothError, match="File not found"):
        load_components(tmp_path / "missing.safetensors")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"x": _Payload()}}, handle)
    with pytest.raises(BoothError, match="could not be loaded safely"):
        load_tensors(path)


def test_plain_ckpt_loads_through_weights_only(tiny_checkpoint, tmp_path):
    state, _ = load_tensors(tiny_checkpoint("sd15"))
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)
    components = load_components(path)
    assert components.family == "sd15"


def test_atomic_write_leaves_no_partial_file_and_normal_permissions(tmp_path):
    import os

    from trainers.files import atomic_write, save_tensors

    target = tmp_path / "out.safetensors"
    save_tensors({"x": torch.ones(2)}, target)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert load_tensors(target)[0]["x"].tolist() == [1.0, 1.0]  # the previous complete file survives
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]  # no temporary left behind


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
