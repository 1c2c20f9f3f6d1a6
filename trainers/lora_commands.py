"""Command-line verbs of the LoRA toolbox: merge, resize, extract (and ``inspect`` on a LoRA file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import BoothError

DTYPE_CHOICES = ("fp16", "bf16", "fp32")
SHARE_RANKS = (1, 2, 4, 8, 16, 32, 64, 128)  # ranks the kept-share table shows, up to the full rank


def _choices(specs: list[list[str]]):
    """``--lora FILE [STRENGTH [TEXT_STRENGTH]]`` -> LoraChoice list; the message names the bad value."""
    from .lora.toolbox import LoraChoice

    choices = []
    for spec in specs:
        if len(spec) > 3:
            raise BoothError(f"--lora takes a file and at most two strengths (UNet, text encoder), not {spec}.")
        try:
            strengths = [float(value) for value in spec[1:]]
        except ValueError:
            raise BoothError(f"--lora {' '.join(spec)}: strengths must be numbers, e.g. --lora style.safetensors "
                             "0.8 0.5") from None
        choices.append(LoraChoice(spec[0], *strengths))
    return choices


def _share_table(result) -> str:
    """Kept share at the usual ranks, up to the full rank of the largest module."""
    full = max(share.singular_values.numel() for share in result.modules.values())
    ranks = [rank for rank in SHARE_RANKS if rank < full] + [full]
    return "  ".join(f"rank {rank}: {result.kept_share_at(rank):.1%}" for rank in ranks)


def _print_lora_result(result, out: Path, as_json: bool) -> None:
    summary = {"output": str(out), "modules": len(result.lora.modules), "ranks": result.ranks,
               "whole_differences": len(result.lora.diffs), "kept_share": result.kept_share, "notes": result.notes}
    if result.modules:
        summary["kept_share_at_rank"] = {rank: result.kept_share_at(rank) for rank in SHARE_RANKS}
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    ranks = ", ".join(f"{count} at rank {rank}" for rank, count in result.ranks.items())
    print(f"wrote {out}: {summary['modules']} modules ({ranks})"
          + (f", {summary['whole_differences']} whole differences" if summary["whole_differences"] else ""))
    if result.modules:
        print(f"  keeps {result.kept_share:.2%} of the difference in its layers (Frobenius norm)")
        print(f"  at a fixed rank every module would keep: {_share_table(result)}")
    for note in result.notes:
        print(f"  note: {note}")


def cmd_merge(args: argparse.Namespace) -> int:
    """With --base: bake the LoRAs into a new checkpoint. Without: combine them into one LoRA."""
    from .checkpoint.writer import parse_dtype
    from .lora.layouts import save_lora_file
    from .lora.toolbox import bake_checkpoint, combine_loras

    choices = _choices(args.lora)
    if args.base:
        if args.rank is not None or args.keep is not None:
            raise BoothError("--rank/--keep re-compress a combined LoRA; they do nothing with --base. Leave them out.")
        done = bake_checkpoint(args.base, choices, args.out, dtype=parse_dtype(args.dtype),
                               skip_unknown=args.skip_unknown, overwrite=args.overwrite)
        if args.json:
            print(json.dumps({**done, "output": str(done["output"])}, indent=1))
            return 0
        print(f"wrote {done['output']}")
        for lora in done["loras"]:
            print(f"  {lora['lora']}: strength {lora['strength']:g} (text {lora['text_strength']:g}), "
                  f"{lora['unet_modules']} UNet + {lora['text_modules']} text-encoder modules"
                  + (f" + {lora['whole_differences']} whole differences" if lora["whole_differences"] else ""))
            if lora["left_out"]:
                print(f"  left out ({len(lora['left_out'])}): {', '.join(lora['left_out'][:8])}")
        return 0
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    result = combine_loras(choices, rank=args.rank, keep=args.keep, title=out.stem)
    save_lora_file(result.lora, out, dtype=parse_dtype(args.dtype or "fp16"), overwrite=args.overwrite)
    _print_lora_result(result, out, args.json)
    return 0


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """Before minutes of work, not after: an existing output, or one that could not be written."""
    from .files import check_output_file

    if out.exists() and not overwrite:
        raise BoothError(f"Output {out} already exists; choose another name or pass --overwrite.")
    check_output_file(out)


def cmd_resize(args: argparse.Namespace) -> int:
    from .checkpoint.writer import parse_dtype
    from .files import same_file
    from .lora.layouts import save_lora_file
    from .lora.toolbox import resize_lora

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    if same_file(args.lora, out):
        raise BoothError(f"Output {out} is the input; choose another output name.")
    result = resize_lora(args.lora, rank=args.rank, keep=args.keep)
    save_lora_file(result.lora, out, dtype=parse_dtype(args.dtype), overwrite=args.overwrite)
    _print_lora_result(result, out, args.json)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .checkpoint.writer import parse_dtype
    from .lora.layouts import save_lora_file
    from .lora.toolbox import extract_lora

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    if out.suffix.lower() != ".safetensors":
        raise BoothError(f"LoRA output {out} must end in .safetensors (the format ComfyUI and kohya load).")
    result = extract_lora(args.base, args.tuned, rank=args.rank, keep=args.keep, conv=args.conv,
                          device=args.device, title=out.stem)
    save_lora_file(result.lora, out, dtype=parse_dtype(args.dtype), overwrite=args.overwrite)
    _print_lora_result(result, out, args.json)
    return 0


def print_lora_description(file: str, as_json: bool) -> int:
    """``inspect`` on a LoRA file."""
    from .checkpoint.families import VARIANTS
    from .lora.toolbox import describe_lora

    info = describe_lora(file)
    if as_json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['file']}\n  LoRA for:        {info['family_label']} ({info['family_source']})"
          + (f" - the {VARIANTS[info['variant']]} architecture" if info["variant"] not in (None, "full") else ""))
    print(f"  layout:          {', '.join(info['layouts'])}")
    print(f"  modules:         {info['modules']} ({', '.join(f'{n} {p}' for p, n in info['modules_per_part'].items())})"
          + (f", {info['conv_modules']} convolutions" if info["conv_modules"] else "")
          + (f", {info['tucker_modules']} Tucker" if info["tucker_modules"] else ""))
    print(f"  rank:            {', '.join(f'{r} ({n} modules)' for r, n in info['ranks'].items())}")
    print(f"  alpha:           {', '.join(f'{a} ({n} modules)' for a, n in info['alphas'].items())}")
    if info["whole_differences"]:
        print(f"  whole diffs:     {info['whole_differences']} (norms, biases)")
    print(f"  size:            {info['size_bytes'] / 2**20:.2f} MB, {info['parameters']:,} parameters, "
          f"dtypes {info.get('dtypes', {})}")
    for label, names in (("unknown keys", info["unknown_keys"]), ("no such layer", info["unmatched_modules"])):
        if names:
            print(f"  {label + ':':<16} {len(names)}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    for key, value in sorted(info["metadata"].items()):
        print(f"  meta {key}: {value if len(value) < 120 else value[:117] + '...'}")
    return 0


def _rank_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--rank", type=int, help=f"{what} to at most this rank (SVD)")
    parser.add_argument("--keep", type=float, help=f"{what} to the smallest rank keeping this share (0-1] of each "
                                                   "module's difference (Frobenius norm)")


def add_commands(verbs) -> None:
    """Register merge, resize and extract on the CLI's subparsers."""
    p = verbs.add_parser("merge", help="bake LoRAs into a checkpoint (--base), or combine LoRAs into one LoRA",
                         description="With --base: a new single-file checkpoint with the LoRAs baked in. Without: "
                                     "one LoRA equal to all of them (exact rank concatenation, or SVD re-compression "
                                     "with --rank/--keep). LoRAs of any common layout are read; a LoRA for another "
                                     "model is refused.")
    p.add_argument("--lora", nargs="+", action="append", required=True, metavar="FILE [STRENGTH [TEXT_STRENGTH]]",
                   help="a LoRA and its strength (default 1) and text-encoder strength (default: the strength); "
                        "repeat for more LoRAs")
    p.add_argument("--base", help="checkpoint to bake into (.safetensors / .ckpt)")
    p.add_argument("--out", required=True, help="output .safetensors (a checkpoint with --base, else a LoRA)")
    _rank_options(p, "re-compress the combined LoRA")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="output dtype (checkpoint default: keep the base's; "
                                                          "LoRA default: fp16)")
    p.add_argument("--skip-unknown", action="store_true", help="bake the rest when some keys or modules would be "
                                                               "left out (they are listed)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_merge)

    p = verbs.add_parser("resize", help="lower a LoRA's rank by SVD (fixed rank or kept share)")
    p.add_argument("lora", help="LoRA file (any common layout)")
    _rank_options(p, "cut each module")
    p.add_argument("--out", required=True, help="output .safetensors (kohya layout)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp16")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_resize)

    p = verbs.add_parser("extract", help="a LoRA from the difference between a fine-tuned checkpoint and its base")
    p.add_argument("--base", required=True, help="the checkpoint that was fine-tuned")
    p.add_argument("--tuned", required=True, help="the fine-tuned checkpoint (e.g. from DreamBooth)")
    p.add_argument("--rank", type=int, default=32, help="largest rank per module (default 32)")
    p.add_argument("--keep", type=float, help="also stop at the smallest rank keeping this share of each module")
    p.add_argument("--conv", action="store_true", help="also extract the UNet's convolutions (LoCon)")
    p.add_argument("--device", help="where the SVDs run, e.g. cuda (default: cpu)")
    p.add_argument("--out", required=True, help="output .safetensors (kohya layout)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp16")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_extract)
