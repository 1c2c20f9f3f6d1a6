"""Which layer of a model each module of a LoRA addresses, and refusing LoRAs made for another model.

A LoRA is matched against real loaded components or, when there is no model at hand (combining,
describing), against a weightless copy of a family's architecture on the meta device. Matching
gives every module its layer and the one name Booth writes for that layer, so LoRAs that name the
same layer in different styles (diffusers or original paths, ``lora_te_`` or ``lora_te1_``) meet.
Misfits are refused naming both families and the first mismatching module, before anything changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.families import FAMILIES, architecture, family_variants
from ..checkpoint.keymap import unet_key_map
from ..checkpoint.modules import make_text_encoder, make_unet
from ..errors import BoothError
from .apply import _core_shape, _fits
from .layouts import LoraFile
from .names import Part, parts, saved_names, underscored, weight_layers

UNKNOWN_FAMILY = "another model (its file does not say which)"
_LISTED = 8  # names shown in a message before "and N more"


@dataclass(frozen=True)
class Target:
    """A module of the model a LoRA name addresses, and the name Booth writes for it."""

    part: Part
    module: torch.nn.Module
    canonical: str


def _holders(root: torch.nn.Module, every_module: bool) -> dict[str, torch.nn.Module]:
    """Linear/Conv2d layers (what low-rank modules update) or every module owning parameters
    (what whole differences, e.g. of norm layers, update)."""
    if not every_module:
        return weight_layers(root)
    return {path: module for path, module in root.named_modules() if path and module._parameters}


def _index(components: SDComponents, every_module: bool) -> dict[str, Target]:
    index: dict[str, Target] = {}
    for part in parts(components):
        holders = _holders(part.root, every_module)
        paths = list(holders)
        canonical = saved_names(part, components.family, paths)
        if part.is_text:
            styles = [saved_names(replace(part, prefix=prefix), components.family, paths)
                      for prefix in (part.prefix, *part.also_read_as)]
        else:
            keys = {path: f"{path}.{next(iter(holders[path]._parameters))}" for path in paths}
            ldm = unet_key_map(part.root.config, keys.values())
            styles = [{path: part.prefix + underscored(path) for path in paths},
                      {path: part.prefix + underscored(ldm[key].rpartition(".")[0]) for path, key in keys.items()}]
        for names in styles:
            for path, name in names.items():
                index[name] = Target(part, holders[path], canonical[path])
    return index


@dataclass
class Fit:
    """How a LoRA lines up with one model."""

    modules: dict[str, Target]  # module name -> layer it updates
    diffs: dict[str, tuple[Target, str]]  # "<module>.weight|bias" -> (module, parameter name)
    unmatched: list[str]  # module names and difference keys that address nothing in this model
    misfit: str | None  # the first module whose shape disagrees with its layer, described

    @property
    def matched(self) -> int:
        return len(self.modules) + len(self.diffs)


def match(lora: LoraFile, components: SDComponents) -> Fit:
    """Line every module and whole difference of ``lora`` up with ``components`` (nothing changes)."""
    return _match(lora, _index(components, every_module=False),
                  _index(components, every_module=True) if lora.diffs else {})


def _match(lora: LoraFile, layers: dict[str, Target], holders: dict[str, Target]) -> Fit:
    fit = Fit({}, {}, [], None)
    for name, module in lora.modules.items():
        target = layers.get(name)
        if target is None:
            fit.unmatched.append(name)
        elif not _fits(module, target.module):
            fit.misfit = fit.misfit or (f"{name} updates a weight of shape {module.weight_shape}, the model's "
                                        f"layer has {tuple(target.module.weight.shape)}")
        else:
            fit.modules[name] = target
    for key, value in lora.diffs.items():
        name, _, parameter = key.rpartition(".")
        target = holders.get(name)
        owned = getattr(target.module, parameter, None) if target else None
        if not isinstance(owned, torch.Tensor):
            fit.unmatched.append(key)
        elif _core_shape(tuple(value.shape)) != _core_shape(tuple(owned.shape)):
            fit.misfit = fit.misfit or (f"{key} is a difference of shape {tuple(value.shape)}, the model's "
                                        f"{parameter} has {tuple(owned.shape)}")
        else:
            fit.diffs[key] = (target, parameter)
    return fit


@functools.lru_cache(maxsize=None)
def skeleton(family: str, variant: str = "full") -> SDComponents:
    """A family's UNet and text encoders on the meta device: names and shapes, no weights (~1 s)."""
    config = architecture(family, variant)
    encoders = [make_text_encoder(text, spec.with_projection, empty=True)
                for spec, text in zip(FAMILIES[family].text_encoders, config["text_encoders"])]
    return SDComponents(family, "epsilon", make_unet(config["unet"], empty=True), None, encoders, [], None)


@functools.lru_cache(maxsize=None)
def _skeleton_index(family: str, variant: str, every_module: bool) -> dict[str, Target]:
    return _index(skeleton(family, variant), every_module)


def match_architecture(lora: LoraFile, family: str, variant: str = "full") -> Fit:
    """:func:`match` against a family's architecture, without weights."""
    return _match(lora, _skeleton_index(family, variant, False),
                  _skeleton_index(family, variant, True) if lora.diffs else {})


@dataclass(frozen=True)
class Architecture:
    """The architecture a LoRA fits: family, variant (full, tiny test, toy world) and how it lines up."""

    family: str
    variant: str
    fit: Fit


def find_architecture(lora: LoraFile) -> Architecture | None:
    """The architecture every module of ``lora`` fits (the family its metadata names first, full size
    before the smaller variants), else the one most of it fits without a shape misfit, else None."""
    named = lora.lora.family
    families = [named, *(f for f in FAMILIES if f != named)] if named else list(FAMILIES)
    best: Architecture | None = None
    for family in families:
        for variant in family_variants(family):
            fit = match_architecture(lora, family, variant)
            if fit.misfit is None and fit.matched and (best is None or fit.matched > best.fit.matched):
                best = Architecture(family, variant, fit)
            if best is not None and not best.fit.unmatched:
                return best
    return best


def lora_family(lora: LoraFile) -> str | None:
    """The family a LoRA was made for: from its metadata, else from the architecture its shapes fit."""
    if lora.lora.family:
        return lora.lora.family
    found = find_architecture(lora)
    return found.family if found else None


def family_label(family: str | None) -> str:
    return FAMILIES[family].label if family else UNKNOWN_FAMILY


def listed(names: list[str]) -> str:
    """``a, b, c and 5 more`` for messages."""
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def refuse_misfit(lora: LoraFile, model_family: str, detail: str) -> BoothError:
    own = FAMILIES[model_family].label
    theirs = lora_family(lora)
    what = (f"a {own} of another size (such as a tiny test or toy-world model)" if theirs == model_family
            else family_label(theirs))
    return BoothError(f"{lora.name} does not fit this model: it is a LoRA for {what}, the model is {own}. {detail} "
                      f"Choose a LoRA made for {own}.")


def check_fit(lora: LoraFile, components: SDComponents, *, skip_unknown: bool = False) -> Fit:
    """Match ``lora`` to ``components`` or refuse: a shape misfit or nothing matching always; keys or
    modules that would be left out unless ``skip_unknown`` (then the caller reports them)."""
    return checked(lora, match(lora, components), components.family, skip_unknown)


def check_architecture(lora: LoraFile, family: str, variant: str = "full", *, skip_unknown: bool = False) -> Fit:
    """:func:`check_fit` against a family's architecture, for models Booth has not loaded (ComfyUI's)."""
    return checked(lora, match_architecture(lora, family, variant), family, skip_unknown)


def checked(lora: LoraFile, fit: Fit, family: str, skip_unknown: bool) -> Fit:
    """``fit``, or the refusal it calls for (see :func:`check_fit`)."""
    if fit.misfit:
        raise refuse_misfit(lora, family, f"First mismatching module: {fit.misfit}.")
    if lora.lora.claimed_family not in (None, family):  # shapes can agree by chance (SD1.x and SD2.x self-attention)
        raise refuse_misfit(lora, family, "Its metadata names the model it was made for.")
    claimed = lora.lora.family
    if fit.unmatched and claimed is not None and claimed != family:  # never merge part of another model's LoRA
        raise refuse_misfit(lora, family, f"First mismatching module: {fit.unmatched[0]} names no layer of this "
                            "model.")
    if not fit.matched:
        first = next(iter([*lora.modules, *lora.diffs]))
        raise refuse_misfit(lora, family, f"None of its {len(lora.modules) + len(lora.diffs)} modules names a "
                            f"layer of this model (first: {first}).")
    left_out = lora.unknown + fit.unmatched
    if left_out and not skip_unknown:
        raise BoothError(f"{lora.name}: {len(left_out)} of its keys or modules would be left out, nothing was "
                         f"merged: {listed(left_out)}. Unknown keys belong to LoRA kinds Booth does not read "
                         "(LoHa, LoKr, DoRA, ...); unmatched modules name no layer of this model. Turn on "
                         "skip_unknown (--skip-unknown) to merge the rest anyway.")
    return fit
