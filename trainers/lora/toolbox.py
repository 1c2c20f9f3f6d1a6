"""The LoRA toolbox: bake LoRAs into a checkpoint, combine several into one, resize one, extract one
from a fine-tuned checkpoint, and describe one.

Every operation reads LoRAs of any layout (:mod:`.layouts`), checks them against the model before
changing anything (:mod:`.fit`), writes outputs atomically in the kohya layout, and says how much of
a difference a lower rank keeps (:mod:`.svd`). docs/toolbox.md explains the maths and the options.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.families import FAMILIES
from ..checkpoint.loader import load_components
from ..checkpoint.writer import save_checkpoint
from ..errors import BoothError
from ..files import check_output_file, read_safetensors_header, require_file, same_file
from .apply import _core_shape, apply_lora
from .fit import (Architecture, Fit, check_architecture, check_fit, family_label, find_architecture, listed,
                  match_architecture)
from .kohya import LoraModule, LoraWeights, kohya_metadata
from .layouts import LoraFile, read_lora_file
from .names import parts, saved_names
from .network import TEXT_TARGET, UNET_TARGETS, LoraSettings
from .svd import check_rank_settings, factorise, kept_shares, refactorise

TEXT_PREFIX = "lora_te"
EXTRACT_TARGETS = ("attention", "feed_forward", "projections")  # every linear layer of the transformers


@dataclass
class LoraChoice:
    """One LoRA to merge: a file (or one already read) and its strengths; ``text_strength`` None = ``strength``."""

    source: str | os.PathLike | LoraFile
    strength: float = 1.0
    text_strength: float | None = None

    def read(self) -> LoraFile:
        return self.source if isinstance(self.source, LoraFile) else read_lora_file(self.source)

    def scale(self, is_text: bool) -> float:
        """The strength for the UNet's or the text encoders' modules."""
        return self.text_strength if is_text and self.text_strength is not None else self.strength

    def scale_for(self, name: str) -> float:
        """The strength for a module (or difference) by its kohya name."""
        return self.scale(name.startswith(TEXT_PREFIX))


@dataclass
class ModuleShare:
    """How much of one module's difference its rank keeps."""

    rank: int
    singular_values: torch.Tensor  # of the module's whole difference, descending

    @property
    def norm(self) -> float:
        return float(self.singular_values.square().sum().sqrt())

    @property
    def kept_share(self) -> float:
        return float(kept_shares(self.singular_values)[self.rank - 1]) if self.singular_values.numel() else 1.0


@dataclass
class LoraResult:
    """A LoRA made by an operation, with what each module kept and what was left out."""

    lora: LoraFile
    modules: dict[str, ModuleShare] = field(default_factory=dict)  # empty when the operation is exact
    notes: list[str] = field(default_factory=list)

    @property
    def kept_share(self) -> float:
        """Share of the whole difference (all modules, Frobenius norm) the LoRA keeps; 1 when exact."""
        return self.kept_share_at(None)

    def kept_share_at(self, rank: int | None) -> float:
        """Overall kept share if every module kept at most ``rank`` (None: the ranks chosen)."""
        total = kept = 0.0
        for share in self.modules.values():
            values = share.singular_values.double()
            cut = share.rank if rank is None else min(rank, values.numel())
            total += float(values.square().sum())
            kept += float(values[:cut].square().sum())
        return (kept / total) ** 0.5 if total > 0 else 1.0

    @property
    def ranks(self) -> dict[int, int]:
        """Rank -> number of modules with it."""
        counts: dict[int, int] = {}
        for module in self.lora.modules.values():
            counts[module.rank] = counts.get(module.rank, 0) + 1
        return dict(sorted(counts.items()))


# ---- baking ------------------------------------------------------------------------------------

def bake_into_components(components: SDComponents, choices: list[LoraChoice], *,
                         skip_unknown: bool = False) -> list[dict]:
    """Add each LoRA at its strengths to the weights of ``components``, in place.

    Every LoRA is checked against the model first (family, shapes, keys left out), so a refusal
    leaves every weight as it was. Returns one summary per LoRA: modules baked per part, what was
    left out (only with ``skip_unknown``).
    """
    loaded = [(choice, choice.read()) for choice in choices]
    fits = [check_fit(lora, components, skip_unknown=skip_unknown) for _, lora in loaded]
    summaries = []
    with torch.no_grad():
        for (choice, lora), fit in zip(loaded, fits):
            matched = LoraWeights({name: lora.modules[name] for name in fit.modules}, lora.metadata, lora.name)
            apply_lora(components, matched, choice.strength, choice.text_strength)
            for key, (target, parameter) in fit.diffs.items():
                weight = getattr(target.module, parameter)
                diff = lora.diffs[key].to(weight.device, torch.float32).reshape(weight.shape)
                weight.copy_((weight.float() + choice.scale(target.part.is_text) * diff).to(weight.dtype))
            text = sum(target.part.is_text for target in fit.modules.values())
            summaries.append({"lora": lora.name, "strength": choice.strength,
                              "text_strength": choice.scale(True), "unet_modules": len(fit.modules) - text,
                              "text_modules": text, "whole_differences": len(fit.diffs),
                              "left_out": lora.unknown + fit.unmatched})
    return summaries


def _check_output(out: Path, overwrite: bool, *inputs: str | os.PathLike) -> None:
    if out.suffix.lower() != ".safetensors":
        raise BoothError(f"Output {out} must end in .safetensors.")
    if any(same_file(source, out) for source in inputs):
        raise BoothError(f"Output {out} is one of the inputs; choose another output name.")
    if out.exists() and not overwrite:
        raise BoothError(f"Output {out} already exists; choose another name or pass --overwrite.")
    check_output_file(out)


def _file_name(source: str | os.PathLike | LoraFile) -> str:
    return Path(source.name if isinstance(source, LoraFile) else source).name


def bake_checkpoint(base: str | os.PathLike, choices: list[LoraChoice], out: str | os.PathLike, *,
                    dtype: torch.dtype | None = None, skip_unknown: bool = False, overwrite: bool = False) -> dict:
    """Bake LoRAs into the checkpoint ``base`` and write a new single-file checkpoint ``out`` atomically.

    ``dtype`` casts the output (None keeps the base's dtypes). Each layer is computed in float32 and
    stored in the base's dtype (float32 when that is the output dtype), then cast once on saving.
    Returns the output path and the per-LoRA summaries.
    """
    target = Path(out)
    _check_output(target, overwrite, base, *(c.source for c in choices if not isinstance(c.source, LoraFile)))
    if not choices:
        raise BoothError("Name at least one LoRA to bake into the checkpoint.")
    components = load_components(base)
    if dtype == torch.float32:  # a wider output than an fp16 base: keep the baked values at that precision
        for module in (components.unet, *components.text_encoders):
            module.to(dtype)
    summaries = bake_into_components(components, choices, skip_unknown=skip_unknown)
    merged = [{"file": _file_name(c.source), "strength": c.strength, "text_strength": c.scale(True)}
              for c in choices]
    metadata = {**components.metadata, "modelspec.title": target.stem, "booth.merged_loras": json.dumps(merged)}
    written = save_checkpoint(components, target, dtype=dtype, metadata=metadata)
    return {"output": written, "loras": summaries}


def fitted_lora(lora: LoraFile, fit: Fit) -> LoraFile:
    """Only what ``fit`` matched, under the names Booth writes for those layers (names every reader maps)."""
    modules = {target.canonical: lora.modules[name] for name, target in fit.modules.items()}
    diffs = {f"{target.canonical}.{parameter}": lora.diffs[key] for key, (target, parameter) in fit.diffs.items()}
    return LoraFile(LoraWeights(modules, lora.metadata, lora.name), diffs, lora.layouts, [])


def lora_for_family(source: str | os.PathLike | LoraFile, family: str, variant: str = "full", *,
                    skip_unknown: bool = False) -> tuple[LoraFile, list[str]]:
    """A LoRA checked against a family's architecture (no weights needed) and reduced to what fits it,
    in the kohya layout: for handing to another program's loader (ComfyUI's) after Booth's checks.
    Returns it and the keys or modules left out (empty unless ``skip_unknown``)."""
    lora = source if isinstance(source, LoraFile) else read_lora_file(source)
    fit = check_architecture(lora, family, variant, skip_unknown=skip_unknown)
    return fitted_lora(lora, fit), lora.unknown + fit.unmatched


# ---- combining ---------------------------------------------------------------------------------

def _plain(module: LoraModule) -> LoraModule:
    """LyCORIS' Tucker form as an ordinary LoCon module, exactly: ``down' = mid ∘ down``."""
    if module.mid is None:
        return module
    down = torch.einsum("abyx,bi->aiyx", module.mid.float(), module.down.float().flatten(1))
    return LoraModule(down, module.up, module.alpha)


def _canonical(lora: LoraFile, found: Architecture | None) -> tuple[list[tuple[str, LoraModule]], list[tuple[str, torch.Tensor]]]:
    """The LoRA's modules and differences under the names Booth writes for their layers (names that
    address nothing in its architecture stay as they are)."""
    targets = found.fit.modules if found else {}
    holders = found.fit.diffs if found else {}
    modules = [(targets[name].canonical if name in targets else name, module) for name, module in lora.modules.items()]
    diffs = [(f"{holders[key][0].canonical}.{holders[key][1]}" if key in holders else key, value)
             for key, value in lora.diffs.items()]
    return modules, diffs


def _common_family(loras: list[LoraFile], found: list[Architecture | None]) -> Architecture | None:
    """The architecture all LoRAs share, or a refusal naming both families and the first misfit."""
    first = next(((lora, arch) for lora, arch in zip(loras, found) if arch is not None), None)
    if first is None:
        return None
    anchor, arch = first
    for lora, other in zip(loras, found):
        if other is not None and other.family != arch.family:
            fit = match_architecture(lora, arch.family, arch.variant)
            detail = fit.misfit or (f"{fit.unmatched[0]} names no layer of it" if fit.unmatched else "")
            raise BoothError(f"Cannot combine {lora.name} (a LoRA for {family_label(other.family)}) with "
                             f"{anchor.name} (a LoRA for {family_label(arch.family)}). First mismatching module: "
                             f"{detail}. Combine LoRAs made for the same model.")
    return arch


def _kernel(module: LoraModule) -> tuple[int, ...]:
    """The kernel a module's factors are stored with: () for matrices, (kh, kw) for convolutions."""
    return tuple(int(k) for k in module.weight_shape[2:]) if module.down.ndim == 4 or module.mid is not None else ()


def _stack(name: str, scaled: list[tuple[LoraModule, float]]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Side-by-side factors ``up [out, R]`` and ``down [R, in*k]`` whose product is the sum of the
    scaled updates (Tucker modules made plain first), and the kernel to store them with."""
    shapes = {_core_shape(module.weight_shape) for module, _ in scaled}
    if len(shapes) > 1:
        raise BoothError(f"The LoRAs disagree on the shape of {name} ({', '.join(map(str, sorted(shapes)))}); "
                         "they were made for different models.")
    plain = [(_plain(module), strength) for module, strength in scaled]
    up = torch.cat([m.up.float().flatten(1) * (s * m.scale) for m, s in plain], dim=1)
    down = torch.cat([m.down.float().flatten(1) for m, _ in plain], dim=0)
    return up, down, max((_kernel(m) for m, _ in plain), key=len)


def _module(up: torch.Tensor, down: torch.Tensor, kernel: tuple[int, ...]) -> LoraModule:
    """Factors in kohya's shapes (down [rank, in, kh, kw] and up [out, rank, 1, 1] for a kernel), alpha = rank."""
    rank = down.shape[0]
    return LoraModule(down.reshape(rank, -1, *kernel), up.reshape(up.shape[0], rank, *(1,) * len(kernel)), float(rank))


def combine_loras(choices: list[LoraChoice], *, rank: int | None = None, keep: float | None = None,
                  title: str = "combined") -> LoraResult:
    """One LoRA equal to all of ``choices`` at their strengths.

    Without ``rank``/``keep`` the ranks are concatenated: exact (the sum of the updates, whole
    differences summed), rank = the sum of the ranks. With them, each layer's sum is re-compressed by
    SVD to at most ``rank`` (or the smallest rank keeping ``keep`` of it) and the kept share is reported.
    LoRAs for different families are refused. Modules are renamed to Booth's names for their layers,
    so LoRAs naming a layer in different styles still add up.
    """
    if not choices:
        raise BoothError("Name at least one LoRA to combine.")
    if rank is not None or keep is not None:
        check_rank_settings(rank, keep)
    loras = [choice.read() for choice in choices]
    found = [find_architecture(lora) for lora in loras]
    arch = _common_family(loras, found)
    groups: dict[str, list[tuple[LoraModule, float]]] = {}
    diffs: dict[str, torch.Tensor] = {}
    for choice, lora, architecture_ in zip(choices, loras, found):
        modules, whole = _canonical(lora, architecture_)
        for name, module in modules:
            groups.setdefault(name, []).append((module, choice.scale_for(name)))
        for key, value in whole:
            scaled = choice.scale_for(key) * value.float()
            diffs[key] = diffs[key] + scaled.reshape(diffs[key].shape) if key in diffs else scaled
    result = LoraResult(LoraFile(LoraWeights({}, {}, title), diffs))
    for name in sorted(groups):
        up, down, kernel = _stack(name, groups[name])
        if rank is None and keep is None:
            result.lora.modules[name] = _module(up, down, kernel)
            continue
        low = refactorise(up, down, rank=rank, keep=keep)
        result.lora.modules[name] = _module(low.up, low.down, kernel)
        result.modules[name] = ModuleShare(low.rank, low.singular_values)
    for lora in loras:
        if lora.unknown:
            result.notes.append(f"{lora.name}: left out {len(lora.unknown)} unknown keys: {listed(lora.unknown)}")
    result.lora.lora.metadata = _lora_metadata(
        arch.family if arch else None, title, result, _prediction_type(loras),
        {"booth.combined_from": json.dumps([{"file": _file_name(c.source), "strength": c.strength,
                                             "text_strength": c.scale(True)} for c in choices]),
         **({"booth.kept_share": f"{result.kept_share:.6f}"} if result.modules else {})})
    return result


def _prediction_type(loras: list[LoraFile]) -> str:
    v = any(lora.metadata.get("ss_v_parameterization") == "True" for lora in loras)
    return "v_prediction" if v else "epsilon"


def _lora_metadata(family: str | None, title: str, result: LoraResult, prediction_type: str,
                   extra: dict[str, str]) -> dict[str, str]:
    """kohya's metadata for a LoRA Booth made from others: family facts, the largest rank as
    ``ss_network_dim`` (alpha = rank in every module, so the scale is 1)."""
    largest = max((m.rank for m in result.lora.modules.values()), default=0)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(largest), "ss_network_alpha": str(largest),
            "modelspec.title": title}
    if family is not None:
        conv = any(m.down.ndim == 4 and m.down.shape[2:] != (1, 1) for m in result.lora.modules.values())
        settings = LoraSettings(rank=max(largest, 1), alpha=float(max(largest, 1)),
                                unet_targets=("conv",) if conv else ())
        meta = {**kohya_metadata(family, settings, title, prediction_type), **meta}
        meta.pop("booth.lora_settings", None)
    return {**meta, **extra}


# ---- resizing ----------------------------------------------------------------------------------

def resize_lora(source: str | os.PathLike | LoraFile, *, rank: int | None = None,
                keep: float | None = None) -> LoraResult:
    """Each module re-factorised by SVD to at most ``rank`` (never above its own) or to the smallest
    rank keeping ``keep`` of its update; at a rank >= the module's own it is lossless. Whole
    differences are kept as they are."""
    check_rank_settings(rank, keep)
    lora = source if isinstance(source, LoraFile) else read_lora_file(source)
    resized = LoraFile(LoraWeights({}, {}, lora.name), dict(lora.diffs), lora.layouts, list(lora.unknown))
    result = LoraResult(resized)
    for name, module in lora.modules.items():
        up, down, kernel = _stack(name, [(module, 1.0)])
        low = refactorise(up, down, rank=min(rank or module.rank, module.rank), keep=keep)
        resized.modules[name] = _module(low.up, low.down, kernel)
        result.modules[name] = ModuleShare(low.rank, low.singular_values)
    if lora.unknown:
        result.notes.append(f"left out {len(lora.unknown)} unknown keys: {listed(lora.unknown)}")
    resized.lora.metadata = {**lora.metadata, "ss_network_dim": str(max(result.ranks, default=0)),
                             "ss_network_alpha": str(max(result.ranks, default=0)),
                             "booth.resized": json.dumps({"rank": rank, "keep": keep,
                                                          "kept_share": round(result.kept_share, 6)})}
    resized.lora.metadata.pop("booth.lora_settings", None)
    return result


# ---- extraction --------------------------------------------------------------------------------

def _extract_patterns(conv: bool) -> tuple[re.Pattern, re.Pattern]:
    unet = [UNET_TARGETS[name] for name in (*EXTRACT_TARGETS, *(("conv",) if conv else ()))]
    return re.compile(rf"(^|\.)({'|'.join(unet)})$"), re.compile(rf"(^|\.){TEXT_TARGET}$")


def _difference(tuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``tuned - base`` in float32, with the base rounded to the tuned file's precision first: an fp16
    copy of an untouched fp32 layer then differs by exactly zero, not by rounding noise."""
    return tuned.float() - base.to(tuned.dtype).float()


def _same_architecture(base: SDComponents, tuned: SDComponents, base_name: str, tuned_name: str) -> None:
    if base.family != tuned.family:
        raise BoothError(f"{tuned_name} is {FAMILIES[tuned.family].label} but the base {base_name} is "
                         f"{FAMILIES[base.family].label}; extract from a model fine-tuned from this base.")
    for part_b, part_t in zip(parts(base), parts(tuned)):
        shapes_b = {k: tuple(v.shape) for k, v in part_b.root.state_dict().items()}
        shapes_t = {k: tuple(v.shape) for k, v in part_t.root.state_dict().items()}
        if shapes_b != shapes_t:
            first = next(k for k in sorted(set(shapes_b) | set(shapes_t)) if shapes_b.get(k) != shapes_t.get(k))
            raise BoothError(f"{tuned_name} and {base_name} are both {FAMILIES[base.family].label} but differ in "
                             f"size (first: {first} {shapes_t.get(first)} vs {shapes_b.get(first)}); extract "
                             "from a model fine-tuned from this base.")


def extract_lora(base: str | os.PathLike | SDComponents, tuned: str | os.PathLike | SDComponents, *,
                 rank: int | None = 32, keep: float | None = None, conv: bool = False,
                 device: torch.device | str | None = None, title: str = "extracted") -> LoraResult:
    """A kohya LoRA approximating ``tuned - base`` by a truncated SVD per layer.

    Layers: every linear layer of the UNet's transformers (attention, feed-forward, projections),
    plus its convolutions with ``conv``, plus the text encoders' attention and MLP layers when they
    changed. Unchanged layers are left out. Each module keeps at most ``rank`` (and with ``keep``
    the smallest rank keeping that share of its difference); alpha = rank, so the scale is 1.
    ``LoraResult.notes`` says what changed that a LoRA of these layers cannot carry.
    """
    check_rank_settings(rank, keep)
    base_name, tuned_name = (label if isinstance(x, SDComponents) else str(x)
                             for x, label in ((base, "the base model"), (tuned, "the tuned model")))
    base_model = base if isinstance(base, SDComponents) else load_components(base)
    tuned_model = tuned if isinstance(tuned, SDComponents) else load_components(tuned)
    _same_architecture(base_model, tuned_model, base_name, tuned_name)
    unet_pattern, text_pattern = _extract_patterns(conv)
    result = LoraResult(LoraFile(LoraWeights({}, {}, title)))
    covered: set[int] = set()
    changes: dict[str, tuple[float, bool]] = {}  # parameter -> (squared change, carried by the LoRA)
    for part_b, part_t in zip(parts(base_model), parts(tuned_model)):
        pattern = text_pattern if part_b.is_text else unet_pattern
        tuned_layers = dict(part_t.root.named_modules())
        paths = [path for path, layer in part_b.root.named_modules()
                 if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) and pattern.search(path)]
        names = saved_names(part_b, base_model.family, paths)
        with torch.no_grad():
            for path in paths:
                base_weight = part_b.root.get_submodule(path).weight
                delta = _difference(tuned_layers[path].weight, base_weight)
                covered.add(id(base_weight))
                if not bool(delta.any()):
                    continue
                low = factorise(delta, rank=rank, keep=keep, device=device)
                result.lora.modules[names[path]] = _module(low.up, low.down, tuple(delta.shape[2:]))
                result.modules[names[path]] = ModuleShare(low.rank, low.singular_values)
            label = "text encoder " if part_b.is_text else "UNet "
            if len(base_model.text_encoders) > 1 and part_b.is_text:
                label = f"text encoder {part_b.prefix[len(TEXT_PREFIX):-1]} "
            for (name, b), t in zip(part_b.root.named_parameters(), part_t.root.parameters()):
                changes[label + name] = (float(_difference(t, b).square().sum()), id(b) in covered)
    result.notes.extend(_uncaptured_notes(result, base_model, tuned_model, changes, conv))
    extracted_text = any(name.startswith(TEXT_PREFIX) for name in result.lora.modules)
    result.lora.lora.metadata = _lora_metadata(
        base_model.family, title, result, tuned_model.prediction_type,
        {"booth.extracted": json.dumps({"base": Path(base_name).name, "tuned": Path(tuned_name).name, "rank": rank,
                                        "keep": keep, "conv": conv, "text_encoder": extracted_text,
                                        "kept_share": round(result.kept_share, 6)})})
    if not result.lora.modules:
        raise BoothError(f"{tuned_name} and {base_name} have identical weights in every layer a LoRA can hold; "
                         "there is nothing to extract.")
    return result


def _uncaptured_notes(result: LoraResult, base: SDComponents, tuned: SDComponents,
                      changes: dict[str, tuple[float, bool]], conv: bool) -> list[str]:
    """What changed between the models that the extracted LoRA does not carry, largest first."""
    notes = []
    if not any(name.startswith(TEXT_PREFIX) for name in result.lora.modules):
        notes.append("the text encoders' attention and MLP layers are unchanged: no text-encoder modules")
    total = sum(change for change, _ in changes.values())
    left = sorted(((change, name) for name, (change, carried) in changes.items() if change and not carried),
                  reverse=True)
    if total > 0 and left:
        largest = ", ".join(f"{name} {(change / total) ** 0.5:.1%}" for change, name in left[:3])
        notes.append(f"{(sum(change for change, _ in left) / total) ** 0.5:.1%} of the difference (Frobenius norm) "
                     f"lies in parameters these LoRA layers cannot carry; largest: {largest}"
                     + ("" if conv else ". conv adds the UNet's resnet and sampler convolutions"))
    with torch.no_grad():
        vae_changed = any(bool(_difference(t, b).any())
                          for b, t in zip(base.vae.parameters(), tuned.vae.parameters()))
    if vae_changed:
        notes.append("the VAE differs; a LoRA does not carry the VAE")
    return notes


# ---- describing --------------------------------------------------------------------------------

def _file_facts(path: Path) -> dict:
    if path.suffix.lower() != ".safetensors":
        return {}
    header, _ = read_safetensors_header(path)
    dtypes: dict[str, int] = {}
    for entry in header.values():
        dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + 1
    return {"tensors": len(header), "dtypes": dtypes}


def _part_of(name: str) -> str:
    for prefix, part in (("lora_te2_", "text_encoder_2"), ("lora_te1_", "text_encoder"), ("lora_te_", "text_encoder")):
        if name.startswith(prefix):
            return part
    return "unet"


def describe_lora(path: str | os.PathLike) -> dict:
    """Family (and how it was told), layouts, modules per part, ranks, alphas, LoCon/Tucker counts,
    whole differences, unknown keys, modules naming no layer of that family, metadata and size."""
    file = require_file(path)
    lora = read_lora_file(file)
    found = find_architecture(lora)
    if lora.lora.family:
        family, how = lora.lora.family, "from the file's metadata or names"
    elif found is not None:
        family, how = found.family, "from its module names and shapes"
    else:
        family, how = None, "unknown: no supported model has all of its layers"
    per_part: dict[str, int] = {}
    ranks: dict[int, int] = {}
    alphas: dict[str, int] = {}
    for name, module in lora.modules.items():
        per_part[_part_of(name)] = per_part.get(_part_of(name), 0) + 1
        ranks[module.rank] = ranks.get(module.rank, 0) + 1
        alphas[f"{module.alpha:g}"] = alphas.get(f"{module.alpha:g}", 0) + 1
    unmatched = found.fit.unmatched if found and found.family == family else []
    return {
        "file": str(file), "family": family, "family_label": family_label(family), "family_source": how,
        "variant": found.variant if found and found.family == family else None, "layouts": list(lora.layouts),
        "modules": len(lora.modules), "modules_per_part": per_part, "ranks": dict(sorted(ranks.items())),
        "alphas": alphas,
        "conv_modules": sum(m.down.ndim == 4 and tuple(m.weight_shape[2:]) != (1, 1) for m in lora.modules.values()),
        "tucker_modules": sum(m.mid is not None for m in lora.modules.values()),
        "whole_differences": len(lora.diffs), "unknown_keys": lora.unknown, "unmatched_modules": unmatched,
        "parameters": sum(m.down.numel() + m.up.numel() + (m.mid.numel() if m.mid is not None else 0)
                          for m in lora.modules.values()) + sum(d.numel() for d in lora.diffs.values()),
        "module_list": {name: {"rank": m.rank, "alpha": m.alpha, "shape": list(m.weight_shape)}
                        for name, m in lora.modules.items()},
        "size_bytes": file.stat().st_size, **_file_facts(file), "metadata": lora.metadata,
    }
