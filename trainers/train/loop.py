"""The one training loop, shared by LoRA, DreamBooth-LoRA and DreamBooth.

Read :func:`train` top to bottom: load, prepare data once, let the recipe choose what trains,
then the step loop. Each step's randomness (batch order, timesteps, noise, dropout) is derived
from the seed and the step number alone, which is what makes a resumed run identical to an
uninterrupted one and lets the caller's own random state stay untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.conditioning import Conditioning, encode_prompts, predict_noise
from ..config import TrainConfig
from ..errors import BoothError
from ..locking import exclusive
from ..progress import Progress
from .batches import EncodedSet, derived_seed
from .noise import diffusion_loss, min_snr_weights, sample_noise, sample_timesteps, training_target
from .optim import make_lr_schedule, make_optimizer
from .ema import unet_average
from .faults import out_of_memory_advice
from .identity import data_identity, model_identity
from .prepare import (PreparedData, StoppedEarly, freeze_text_encoders, instance_items, load_base, place_for_training,
                      prepare_data, sample_images, settle_dtypes)
from .recipes import RECIPES, trainable_parameters
from .record import TrainResult, snapshot_path, training_metadata, write_loss_log
from .runtime import choose_device, choose_precision, peak_memory_bytes, reset_peak_memory
from .paths import check_run_paths, remove_stale_temporaries
from .state import TrainingState, refuse_non_finite, state_path


def train(config: TrainConfig, progress: Progress | None = None, components: SDComponents | None = None,
          resume: bool | str | Path = False, instance_images: torch.Tensor | None = None, *,
          overwrite: bool = True, resumable: bool = True) -> TrainResult:
    """Train as ``config`` says and write the result to ``config.output``.

    ``components``: an already loaded model (the ComfyUI node passes the graph's); it is trained
    in place and returned with the result. ``instance_images``: a float BHWC batch in [0, 1] to
    train on instead of the ``images`` folder. ``resume``: True continues from
    ``<output_dir>/state.pt`` if there is one; a path continues from that file. ``overwrite``:
    False refuses an existing output (unless resuming the run that wrote it). ``resumable``: False
    saves no state when stopped (for callers that cannot resume). Raises :class:`BoothError` for
    anything the user can fix, before the model loads where it can be known then.
    """
    config = config.validate().resolved()
    progress = progress or Progress()
    check_run_paths(config, overwrite=overwrite, resume=resume)
    with exclusive([Path(config.output), Path(config.output_dir)], "training run"):
        stale = remove_stale_temporaries(config)
        if stale:
            progress.on_message(f"removed {len(stale)} temporary file(s) left by an interrupted save (first: "
                                f"{stale[0]})")
        return _train(config, progress, components, resume, instance_images, resumable)


def _train(config: TrainConfig, progress: Progress, components: SDComponents | None, resume: bool | str | Path,
           instance_images: torch.Tensor | None, resumable: bool) -> TrainResult:
    device = choose_device(config.device)
    precision = choose_precision(config.mixed_precision, device)
    if precision.note:
        progress.on_message(precision.note)
    clock = _Clock(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), out_of_memory_advice(config, device):
        items = instance_items(config, instance_images)
        components = components if components is not None else load_base(config, progress)
        model_id = model_identity(components)  # before anything trains or changes dtype
        recipe = RECIPES[config.method]
        text_steps = recipe.text_encoder_steps(config)
        trains_text = text_steps != 0
        settle_dtypes(components, precision, recipe.trains_base_weights, trains_text)
        try:
            data = prepare_data(components, config, device, progress, items, trains_text)
        except StoppedEarly as stop:
            return _nothing_saved(config, progress, clock, components, f"stopped {stop}", 0, [])
        groups = recipe.prepare(components, config)
        place_for_training(components, config, device, trains_text)
        optimizer = make_optimizer(groups, config.optimizer, config.weight_decay, device)
        params = trainable_parameters(components)
        state = TrainingState(params, optimizer,
                              make_lr_schedule(optimizer, config.lr_scheduler, config.warmup_steps, config.steps),
                              precision.make_scaler(),
                              unet_average(params, config.dreambooth.use_ema, config.dreambooth.ema_decay),
                              inputs={"model": model_id, **data_identity(data.instance, data.prior)})
        step = start = state.resume(resume, config, progress)
        runner = _StepRunner(components, config, data, device, precision, trains_text, list(state.params.values()))

        def save_result(path: Path) -> Path:
            refuse_non_finite(state.params, step)
            metadata = training_metadata(config, steps_done=step, seconds=clock.seconds(), peak_memory=clock.peak(),
                                         started_at=clock.started_at, num_class_images=data.num_class_images,
                                         captions=data.instance_captions)
            return recipe.save(components, config, path, metadata)

        progress.on_start(config.steps)
        samples, snapshots, stopped = [], [], False
        try:
            while step < config.steps and not (stopped := progress.should_stop()):
                if runner.trains_text and text_steps is not None and step >= text_steps:
                    freeze_text_encoders(components, data, optimizer, device)
                    runner.trains_text = False
                    progress.on_message(f"text encoder trained for {step} steps; frozen from here on")
                state.history.append(runner.run(step, state))
                step += 1
                progress.on_step(step, config.steps, state.history[-1]["loss"], state.history[-1]["lr"])
                if config.sample.every and (step % config.sample.every == 0 or step == config.steps):
                    samples += sample_images(components, config, device, step, progress)
                if config.save_every and step % config.save_every == 0 and step < config.steps:
                    state.save(config, step)
                    if recipe.snapshots:  # a LoRA per save point, to pick the best step afterwards
                        snapshots.append(save_result(snapshot_path(config, step)))
            optimizer.zero_grad(set_to_none=True)  # the last gradients are not saved; free them (GBs for a full UNet)
            if stopped and step == start:  # nothing new: keep every file as it was (never an untrained result)
                return _nothing_saved(config, progress, clock, components, "stopped before the first step of this run",
                                      step, state.history)
            if stopped:
                progress.on_message(f"stopping at step {step} as requested; saving")
            saved_state = state.save(config, step) if (stopped and resumable) or config.save_every else None
            if state.ema is not None:  # the result is the average; the state just saved keeps the raw weights
                state.ema.copy_to_weights()
            try:
                output = save_result(Path(config.output))
            except OSError as error:
                raise _unsaved(error, state, config, step, saved_state) from None
        finally:  # even a diverged or failed run leaves its loss log for diagnosis (if it did a step)
            if len(state.history) > start:
                _write_loss_log(state.history, Path(config.output_dir), progress)
            for module in (components.unet, *components.text_encoders):
                module.eval()
    progress.on_message(f"saved {output} after {step} steps ({step - start} in this run) in {clock.seconds():.1f} s")
    return TrainResult(output, [row["loss"] for row in state.history], step, clock.seconds(), clock.peak(),
                       components, samples, stopped, saved_state, config, state.history, data.class_folder,
                       data.class_images_generated, snapshots)


def _nothing_saved(config: TrainConfig, progress: Progress, clock: "_Clock", components: SDComponents, why: str,
                   step: int, history: list[dict]) -> TrainResult:
    """The result of a run stopped before it trained anything: no file written or replaced (output None)."""
    kept = f"; {config.output} kept as it was" if Path(config.output).exists() else ""
    progress.on_message(f"{why}: nothing saved{kept}")
    return TrainResult(None, [row["loss"] for row in history], step, clock.seconds(), clock.peak(), components,
                       stopped=True, config=config, history=history)


def _unsaved(error: OSError, state: TrainingState, config: TrainConfig, step: int,
             saved_state: Path | None) -> BoothError:
    """The result could not be written: keep the trained weights as a resumable state (in the work
    folder, else in the system's temporary folder) and say where, so hours of training are not lost."""
    shown = error.filename and not str(error.filename).endswith(".tmp")  # the hidden temporary says nothing
    reason = f"{error.strerror or error}" + (f": {error.filename}" if shown else "")
    kept = saved_state
    for place in (None, Path(tempfile.gettempdir()) / f"booth-{Path(config.output).stem}-{os.getpid()}-state.pt"):
        if kept is not None:
            break
        with contextlib.suppress(OSError, BoothError):
            kept = state.save(config, step, place)
    if kept is None:
        return BoothError(f"Could not write {config.output} ({reason}), nor keep the trained weights anywhere; "
                          f"the {step} steps are lost. Free disk space and check the folders' permissions.")
    resume = "--resume" if kept == state_path(config) else f"--resume {kept}"
    return BoothError(f"Could not write {config.output} ({reason}). The {step} trained steps are kept in {kept}: "
                      f"fix the problem (free space, a writable folder, a file name), then run the same command with "
                      f"{resume} to save them without training again.")


def _write_loss_log(history: list[dict], folder: Path, progress: Progress) -> None:
    """The loss log is for diagnosis: failing to write it must not fail (or mask the error of) a run."""
    try:
        write_loss_log(history, folder)
    except OSError as error:
        progress.on_message(f"warning: could not write the loss log in {folder} ({error.strerror or error}); "
                            "the training result is not affected")


class _Clock:
    """Wall time and peak memory since the run started (what the result and the LoRA metadata report)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.started_at, self._start = device, time.time(), time.perf_counter()
        reset_peak_memory(device)

    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def peak(self) -> int:
        return peak_memory_bytes(self.device)


class _StepRunner:
    """One optimiser step: ``gradient_accumulation`` micro-batches, clipping, optimiser and schedule."""

    def __init__(self, components: SDComponents, config: TrainConfig, data: PreparedData, device: torch.device,
                 precision, trains_text: bool, params: list[torch.nn.Parameter]) -> None:
        self.components, self.config, self.data, self.device = components, config, data, device
        self.precision, self.trains_text, self.params = precision, trains_text, params
        self.scheduler = components.scheduler
        self.scale = 2 ** (len(components.vae.config.block_out_channels) - 1)

    def run(self, step: int, state: TrainingState) -> dict:
        config, optimizer, scaler = self.config, state.optimizer, state.scaler
        optimizer.zero_grad(set_to_none=True)
        parts: dict[str, float] = {}
        for micro in range(config.gradient_accumulation):
            number = step * config.gradient_accumulation + micro
            generator = torch.Generator().manual_seed(derived_seed(config.seed, "noise", number))
            torch.manual_seed(derived_seed(config.seed, "dropout", number))
            with self.precision.autocast():
                losses = self._losses(number, generator)
            loss = losses["instance_loss"] + config.prior.loss_weight * losses.get("prior_loss", 0.0)
            if not torch.isfinite(loss):
                raise self._diverged(step + 1, loss.item())
            scaled = loss / config.gradient_accumulation
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            for key, value in (("loss", loss), *losses.items()):
                parts[key] = parts.get(key, 0.0) + value.detach().item() / config.gradient_accumulation
        if scaler is not None:
            scaler.unscale_(optimizer)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        state.schedule.step()
        if state.ema is not None:
            state.ema.update()
        return {"step": step + 1, **parts, "lr": lr}

    def _diverged(self, step: int, value: float) -> BoothError:
        fp32 = "" if self.precision.mode == "no" else f", or set mixed_precision=no (fp32 instead of {self.precision.mode})"
        return BoothError(f"Training diverged: the loss became {value} at step {step}, so no weights were saved "
                          f"(state saved earlier, if any, is kept). Lower learning_rate (now "
                          f"{self.config.learning_rate:g}; try {self.config.learning_rate / 10:g}){fp32}.")

    def _losses(self, number: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Instance (and class) loss of one micro-batch; both halves share one UNet call when shapes match."""
        config = self.config
        batches = [("instance_loss", self.data.instance)]
        if self.data.prior is not None:
            batches.append(("prior_loss", self.data.prior))
        inputs = [self._inputs(encoded, encoded.batch(number, config.batch_size, config.seed), generator)
                  for _, encoded in batches]
        if len({tuple(i["noisy"].shape[1:]) for i in inputs}) == 1:
            merged = {k: _cat([i[k] for i in inputs]) for k in inputs[0]}
            predictions = self._predict(merged).split([len(i["noisy"]) for i in inputs])
        else:
            predictions = [self._predict(i) for i in inputs]
        return {name: diffusion_loss(pred, i["target"], i["weights"])
                for (name, _), i, pred in zip(batches, inputs, predictions)}

    def _inputs(self, encoded: EncodedSet, rows: list[int], generator: torch.Generator) -> dict:
        config, scheduler = self.config, self.scheduler
        latents = torch.stack([encoded.latents[i] for i in rows])
        noise = sample_noise(latents, generator, config.noise_offset)
        timesteps = sample_timesteps(len(rows), scheduler, generator)
        captions = [encoded.captions[i] for i in rows]
        if self.trains_text:
            cond = encode_prompts(self.components, captions)
        else:
            cond = Conditioning.cat([self.data.embeddings[c] for c in captions]).to(self.device)
        latents, noise, timesteps = latents.to(self.device), noise.to(self.device), timesteps.to(self.device)
        return {"noisy": scheduler.add_noise(latents, noise, timesteps), "timesteps": timesteps, "cond": cond,
                "target": training_target(scheduler, latents, noise, timesteps),
                "weights": min_snr_weights(scheduler, timesteps, config.min_snr_gamma)}

    def _predict(self, inputs: dict) -> torch.Tensor:
        height, width = inputs["noisy"].shape[-2:]
        return predict_noise(self.components, inputs["noisy"], inputs["timesteps"], inputs["cond"],
                             (height * self.scale, width * self.scale))


def _cat(values: list):
    if isinstance(values[0], Conditioning):
        return Conditioning.cat(values)
    if values[0] is None:
        return None
    return torch.cat(values)

