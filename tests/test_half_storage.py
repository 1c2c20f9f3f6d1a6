"""Frozen fp16 weights computed in float32 layer by layer: exactly the float32 results, half the memory."""

from __future__ import annotations

import torch

from trainers.checkpoint.loader import load_components
from trainers.train.half_storage import keep_half_storage


def _fp16_model(tmp_path):
    from trainers.checkpoint.test_models import make_test_checkpoint

    path = make_test_checkpoint("sd15", tmp_path / "tiny_fp16.safetensors", variant="tiny", seed=1, dtype=torch.float16)
    return load_components(path), load_components(path)


def test_half_stored_modules_give_the_float32_results_exactly(tmp_path):
    half, reference = _fp16_model(tmp_path)
    for module in (reference.unet, reference.vae, *reference.text_encoders):
        module.float()
    for module in (half.unet, half.vae, *half.text_encoders):
        assert keep_half_storage(module)
    assert {p.dtype for p in half.unet.parameters()} == {torch.float16}  # nothing was stored in float32

    torch.manual_seed(0)
    latents = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 77, half.unet.config.cross_attention_dim)
    timesteps = torch.tensor([10, 900])
    grads = []
    for unet in (half.unet, reference.unet):
        x = latents.clone().requires_grad_()
        out = unet(x, timesteps, encoder_hidden_states=context).sample
        out.square().mean().backward()
        grads.append((out.detach(), x.grad))
    assert grads[0][0].dtype == torch.float32
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])

    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(half.vae.encode(pixels).latent_dist.mean, reference.vae.encode(pixels).latent_dist.mean)
    ids = half.tokenizers[0](["a photo of sks dog"], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
    assert torch.equal(half.text_encoders[0](ids).last_hidden_state,
                       reference.text_encoders[0](ids).last_hidden_state)


def test_float32_or_trainable_modules_are_left_alone(tiny_checkpoint, tmp_path):
    half, _ = _fp16_model(tmp_path)
    full = load_components(tiny_checkpoint("sd15"))
    assert not keep_half_storage(full.unet)  # already float32: nothing to save
    half.unet.conv_in.weight.requires_grad_(True)
    assert not keep_half_storage(half.unet)  # a weight that trains must be stored in float32
    assert "forward" not in vars(half.unet.conv_out)


def test_every_layer_upcasts_into_one_buffer_the_size_of_the_largest_weight(tmp_path):
    half, _ = _fp16_model(tmp_path)
    assert keep_half_storage(half.unet)
    scratches = {id(layer.upcast_scratch) for layer in half.unet.modules() if hasattr(layer, "upcast_scratch")}
    assert len(scratches) == 1
    scratch = half.unet.conv_in.upcast_scratch
    largest = max(layer.weight.numel() for layer in half.unet.modules()
                  if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)))
    context = torch.randn(1, 77, half.unet.config.cross_attention_dim)
    addresses = []
    for _ in range(2):
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        half.unet(x, torch.tensor([10]), encoder_hidden_states=context).sample.sum().backward()
        addresses.append(scratch.buffer.data_ptr())
    assert scratch.buffer.dtype == torch.float32 and scratch.buffer.numel() == largest
    assert addresses[0] == addresses[1]  # the second step allocated no float32 weight memory


def test_a_model_used_under_inference_mode_first_still_trains(tmp_path):
    """Class images and previews run under torch.inference_mode (so does ComfyUI's executor); the
    upcast buffer they leave must not break the training passes that follow."""
    half, reference = _fp16_model(tmp_path)
    reference.unet.float()
    assert keep_half_storage(half.unet)
    context = torch.randn(1, 77, half.unet.config.cross_attention_dim)
    with torch.inference_mode():
        half.unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=context)
    assert half.unet.conv_in.upcast_scratch.buffer.is_inference()
    grads = []
    for unet in (half.unet, reference.unet):
        x = torch.ones(1, 4, 8, 8, requires_grad=True)
        unet(x, torch.tensor([10]), encoder_hidden_states=context).sample.square().mean().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
