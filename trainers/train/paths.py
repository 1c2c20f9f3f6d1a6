"""Where a run writes, checked before the model loads: a run must never destroy an input, replace a
file it was not asked to replace, read its own outputs as training images, or train for hours and
then find it cannot save.

The command line and the ComfyUI nodes both train through :func:`trainers.train.train`, which calls
:func:`check_run_paths` first, so these rules hold for every way of starting a run.
"""

from __future__ import annotations

from pathlib import Path

from ..config import TrainConfig
from ..data.dataset import folder_is_read
from ..errors import BoothError
from ..files import check_file_name, check_output_file, check_writable_folder, same_file
from .prepare import samples_folder
from .state import state_path


def check_run_paths(config: TrainConfig, *, overwrite: bool, resume: object) -> None:
    """Refuse, with one message each, an output that is an input, exists (unless ``overwrite``, or
    resuming with a saved state), is a folder or cannot be written, and work folders that are
    files, unwritable, or read as instance images. ``config`` must be resolved."""
    output = Path(config.output)
    check_file_name(output.name, "output")
    if config.base and same_file(output, config.base):
        raise BoothError(f"Output {output} is one of the inputs (the base checkpoint {config.base}); training would "
                         "replace it. Choose another output name.")
    resuming = resume not in (False, None) and (resume is not True or state_path(config).is_file())
    if output.exists() and not output.is_dir() and not (overwrite or resuming):
        raise BoothError(f"Output {output} already exists; choose another name, pass --overwrite to replace it, "
                         "or --resume to continue the run that wrote it.")
    _check_not_in_images(config)
    check_output_file(output, "Output")
    check_writable_folder(config.output_dir, "output_dir (the work folder)")
    check_writable_folder(config.cache_dir, "cache_dir")
    if config.prior.enabled and config.prior.class_images:
        check_writable_folder(config.prior.class_images, "prior.class_images (generated class images are saved there)")


def _check_not_in_images(config: TrainConfig) -> None:
    """Booth writes pictures (loss.png, samples, class images) into these folders; where the instance
    images are read from, the next run would train on them."""
    if not config.images:
        return
    images = Path(config.images)
    folders = {"output_dir": config.output_dir, "cache_dir": config.cache_dir}
    if config.sample.every:
        folders["output_dir/samples (previews)"] = str(samples_folder(config))
    if config.prior.enabled and config.prior.class_images:
        folders["prior.class_images"] = config.prior.class_images
    for name, folder in folders.items():
        if folder_is_read(images, Path(folder)):
            raise BoothError(f"{name} {folder} is read as part of the instance images folder {images}: Booth's own "
                             f"pictures written there would be trained on as your subject. Choose another folder "
                             f"for {name}.")


def remove_stale_temporaries(config: TrainConfig) -> list[Path]:
    """Delete the hidden temporaries that killed saves of this run's files left behind (``.name.*.tmp``
    beside the output, anywhere in the work folder but its cache). Call while holding the run's lock:
    then no live writer can own them. Returns what was removed."""
    output, work, cache = Path(config.output), Path(config.output_dir), Path(config.cache_dir).resolve()
    found = list(dict.fromkeys([*output.parent.glob(f".{output.name}.*.tmp"),
                                *(p for p in work.rglob(".*.tmp") if cache not in p.resolve().parents)]))
    for path in found:
        path.unlink(missing_ok=True)
    return found
