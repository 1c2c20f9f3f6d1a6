"""Command line: one small function per verb; user errors print one line, no stack trace."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import BoothError

FAMILY_CHOICES = ("sd15", "sd2", "sdxl")
DTYPE_CHOICES = ("fp16", "bf16", "fp32")


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return f"{size:.1f} GB"


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint.inspect import describe_checkpoint

    info = describe_checkpoint(args.file)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['file']}\n  family:          {info['family_label']} ({info['family']}, {info['variant']})")
    print(f"  prediction type: {info['prediction_type']} ({info['prediction_type_source']})")
    print(f"  EMA weights:     {'yes' if info['has_ema'] else 'no'}")
    print(f"  size:            {_human_size(info['size_bytes'])}, {info['tensors']} tensors, dtypes {info['dtypes']}")
    for part, count in info["parameters"].items():
        print(f"  {part + ':':<16} {count / 1e6:,.1f} M parameters")
    for key, value in sorted(info["metadata"].items()):
        print(f"  meta {key}: {value if len(value) < 120 else value[:117] + '...'}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint.convert import convert_checkpoint
    from .checkpoint.writer import parse_dtype

    out = convert_checkpoint(args.source, args.target, dtype=parse_dtype(args.dtype), drop_ema=args.drop_ema,
                             overwrite=args.overwrite)
    print(f"wrote {out} ({_human_size(out.stat().st_size)})")
    return 0


def cmd_make_test_model(args: argparse.Namespace) -> int:
    from .checkpoint.test_models import make_test_checkpoint
    from .checkpoint.writer import parse_dtype

    out = make_test_checkpoint(args.family, args.out, tiny=args.tiny, seed=args.seed, dtype=parse_dtype(args.dtype),
                               prediction_type=args.prediction_type)
    print(f"wrote {out} ({_human_size(out.stat().st_size)}): random weights, {args.family}"
          f"{' tiny' if args.tiny else ''}, seed {args.seed}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainers",
                                     description="Booth: fine-tune Stable Diffusion (LoRA, DreamBooth) offline.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages and stack traces")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("inspect", help="describe a checkpoint: family, prediction type, parameters, metadata")
    p.add_argument("file", help="single-file checkpoint (.safetensors, .ckpt, .pt)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_inspect)

    p = verbs.add_parser("convert", help="re-save a checkpoint as .safetensors (cast dtype, drop EMA)")
    p.add_argument("source", help="input checkpoint (.safetensors, .ckpt, .pt)")
    p.add_argument("target", help="output .safetensors file")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="cast floating-point tensors (default: keep)")
    p.add_argument("--drop-ema", action="store_true", help="leave out the EMA copy of the UNet (model_ema.*)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(run=cmd_convert)

    p = verbs.add_parser("make-test-model", help="write a seeded random-weight checkpoint (nothing downloaded)")
    p.add_argument("--family", choices=FAMILY_CHOICES, default="sd15")
    p.add_argument("--tiny", action="store_true", help="a few-MB model for tests instead of the full architecture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="storage dtype (default fp32)")
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(run=cmd_make_test_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.run(args)
    except BoothError as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """diffusers/transformers print advice meant for hub users; keep the CLI's output ours."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
