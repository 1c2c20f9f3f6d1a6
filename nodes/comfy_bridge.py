"""The only module that knows ComfyUI's objects: MODEL/CLIP/VAE <-> state dicts, folders, progress.

ComfyUI is imported inside functions so that importing the pack (at ComfyUI start-up, or in tests
without ComfyUI) stays cheap and never fails.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn, TypeVar

import torch

from ..trainers.errors import BoothError, describe_os_error
from ..trainers.files import check_file_name
from ..trainers.progress import Progress
from . import ui

if TYPE_CHECKING:
    from ..trainers.checkpoint.components import SDComponents

PROGRESS_EVENT = "booth.progress"
_SAFE_NAME = re.compile(r"[^\w\-. ]+", re.UNICODE)
Entry = TypeVar("Entry", bound=Callable)


def reports_user_errors(entry: Entry) -> Entry:
    """Wrap a node's entry function (its FUNCTION): ComfyUI shows a node's exception message to the
    user, so a file problem no Booth check foresaw is raised as the one line the command line would
    print (a BoothError naming the file and the fix; the OSError stays attached as its cause for the
    console log). A BoothError already says it; anything else is a bug and propagates unchanged."""

    @functools.wraps(entry)
    def run(*args, **kwargs):
        try:
            return entry(*args, **kwargs)
        except OSError as error:
            raise BoothError(describe_os_error(error)) from error

    return run  # type: ignore[return-value]


def tokenizer_dir() -> str | None:
    """ComfyUI's own CLIP vocabulary folder, so nothing extra is needed inside ComfyUI."""
    import comfy.sd1_clip

    folder = Path(comfy.sd1_clip.__file__).with_name("sd1_tokenizer")
    return str(folder) if (folder / "vocab.json").is_file() else None


def graph_state_dict(model, clip, vae) -> dict[str, torch.Tensor]:
    """The original-layout checkpoint that the graph's MODEL/CLIP/VAE hold, patches (LoRAs) applied.

    Mirrors what ComfyUI's own Save Checkpoint does, without writing a file. Newer ComfyUI releases
    save through the ModelPatcher and CLIP objects; older ones (0.3.x to 0.8) through the inner
    model and ``CLIP.get_sd``, once the load has written the patches into the weights.
    """
    import comfy.model_management

    comfy.model_management.load_models_gpu([model, clip.load_model()], force_patch_weights=True)
    saver = model if hasattr(model, "state_dict_for_saving") else model.model
    clip_state = clip.state_dict_for_saving() if hasattr(clip, "state_dict_for_saving") else clip.get_sd()
    state = saver.state_dict_for_saving(clip_state, vae.get_sd(), None)
    return {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().to("cpu").clone()
            for k, v in state.items()}


def graph_components(model, clip, vae) -> SDComponents:
    """A Booth copy (:class:`SDComponents`) of the graph's model, to train or compare against."""
    from ..trainers.checkpoint.loader import load_components

    return load_components(graph_state_dict(model, clip, vae), name="the connected model",
                           tokenizer_dir=tokenizer_dir())


def load_checkpoint(path: Path) -> tuple:
    """(MODEL, CLIP, VAE) from a single-file checkpoint, as the standard Load Checkpoint node loads it."""
    import comfy.sd
    import folder_paths

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(path), output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return model, clip, vae


def lora_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


def checkpoint_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("checkpoints")[0])


def input_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_input_directory())


def output_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_output_directory())


def safe_output_path(folder: Path, name: str, suffix: str, overwrite: bool, widget: str) -> Path:
    """``folder/name.suffix`` with the name cleaned: no path traversal, no silent overwrite."""
    stem = _SAFE_NAME.sub("_", Path(name.strip()).name).strip(" .")
    if stem.lower().endswith(suffix):
        stem = stem[: -len(suffix)]
    if not stem:
        raise BoothError(f"{widget} is empty; give the output a name, e.g. 'my_subject'.")
    check_file_name(f"{stem}{suffix}", widget)
    path = folder / f"{stem}{suffix}"
    if path.exists() and not overwrite:
        raise BoothError(f"{widget}: {path.name} already exists in {folder}. Choose another name or turn on overwrite.")
    return path


def apply_lora(model, clip, lora_path: Path, strength_model: float, strength_clip: float):
    """The graph's MODEL/CLIP with a LoRA file applied the way the standard Load LoRA node does it."""
    import comfy.sd
    import comfy.utils

    lora = comfy.utils.load_torch_file(str(lora_path), safe_load=True)
    return comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)


def free_memory() -> None:
    import comfy.model_management

    comfy.model_management.soft_empty_cache()


def image_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """Booth and ComfyUI both use BHWC float in [0, 1]; make it contiguous float32 on the CPU."""
    return images.detach().to("cpu", torch.float32).clamp(0, 1).contiguous()


class ComfyProgress(Progress):
    """Forwards training events to ComfyUI's progress bar, the Cancel button and the web extension.

    Cancel reaches a node two ways: the interrupt flag, and ComfyUI's progress-bar hook raising
    InterruptProcessingException (resetting the flag) when it sees the flag. Both become
    :attr:`stop_requested`, so the loop finishes the current step and saves before the node raises
    the interrupt itself (:func:`raise_interrupted`).
    """

    def __init__(self, node_id: str | None, title: str) -> None:
        self.node_id, self.title = node_id, title
        self.stop_requested = False
        self._bar = None
        self._started = time.perf_counter()
        self._losses: list[float] = []

    def on_start(self, total_steps: int) -> None:
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(total_steps, node_id=self.node_id)
        self._started = time.perf_counter()
        self._send({"event": "start", "total": total_steps})

    def on_step(self, step: int, total: int, loss: float, lr: float) -> None:
        self._losses.append(loss)
        self._update_bar(step, total)
        elapsed = time.perf_counter() - self._started
        eta = elapsed / max(1, len(self._losses)) * (total - step)
        self._send({"event": "step", "step": step, "total": total, "loss": loss, "lr": lr, "eta": eta})

    def on_sample(self, step: int, images: torch.Tensor) -> None:
        if images.shape[0]:
            from PIL import Image

            first = (image_to_comfy(images[:1])[0].numpy() * 255).round().astype("uint8")
            self._update_bar(step, None, ("PNG", Image.fromarray(first), 512))
            self._send(ui.sample_event(step, images))

    def on_message(self, text: str) -> None:
        self._send({"event": "message", "text": text})

    def should_stop(self) -> bool:
        import comfy.model_management

        self.stop_requested = self.stop_requested or comfy.model_management.processing_interrupted()
        return self.stop_requested

    def _update_bar(self, value: int, total: int | None, preview: tuple | None = None) -> None:
        import comfy.model_management

        if self._bar is None:
            return
        try:
            self._bar.update_absolute(value, total, preview)
        except comfy.model_management.InterruptProcessingException:  # the server's hook saw Cancel
            self.stop_requested = True

    def _send(self, payload: dict) -> None:
        try:
            from server import PromptServer
        except ImportError:
            return
        server = getattr(PromptServer, "instance", None)  # set only once ComfyUI's server has started
        if server is not None:
            server.send_sync(PROGRESS_EVENT, {"node": self.node_id, "title": self.title, **payload})


def raise_interrupted() -> NoReturn:
    """End a cancelled node the ComfyUI way: the executor reports the prompt as interrupted and
    caches no output. The flag is cleared, as ComfyUI's own interrupt check does when it raises."""
    import comfy.model_management

    comfy.model_management.interrupt_current_processing(False)
    raise comfy.model_management.InterruptProcessingException()


def release_memory(error: BaseException | None = None) -> None:
    """Give back what a finished or failed run held: ``error``'s traceback would otherwise keep the
    trained model's frames (GBs) alive for as long as ComfyUI keeps the error."""
    import gc

    if error is not None:
        traceback.clear_frames(error.__traceback__)
    gc.collect()
    free_memory()


@contextlib.contextmanager
def memory_released() -> Iterator[None]:
    """Free what the block held (a model copy: GBs) as soon as it ends, even when it ends by an error."""
    try:
        yield
    except BaseException as error:
        release_memory(error)
        raise
    release_memory()


def relative_to_input(path_text: str, widget: str) -> Path:
    """A folder widget: an absolute path, or a path inside ComfyUI's input folder."""
    text = path_text.strip().strip('"')
    if not text:
        raise BoothError(f"{widget} is empty; give a folder of images (a path, or a subfolder of ComfyUI's input folder).")
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else input_folder() / path
