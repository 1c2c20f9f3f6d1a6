"""Command line: one small function per verb; user errors print one line, no stack trace."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .bench import add_commands as add_bench_commands
from .errors import BoothError, describe_os_error
from .evaluate.commands import add_commands as add_evaluate_commands
from .formatting import format_size
from .lora_commands import add_commands as add_lora_commands
from .toyworld import DEMO_STEPS
from .toyworld.commands import add_commands as add_toyworld_commands

FAMILY_CHOICES = ("sd15", "sd2", "sdxl")
DTYPE_CHOICES = ("fp16", "bf16", "fp32")


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint.inspect import describe_checkpoint
    from .lora.layouts import looks_like_lora

    if looks_like_lora(args.file):
        from .lora_commands import print_lora_description

        return print_lora_description(args.file, args.json)
    info = describe_checkpoint(args.file)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['file']}\n  family:          {info['family_label']} ({info['family']}, {info['variant']})")
    print(f"  prediction type: {info['prediction_type']} ({info['prediction_type_source']})")
    print(f"  EMA weights:     {'yes' if info['has_ema'] else 'no'}")
    print(f"  size:            {format_size(info['size_bytes'])}, {info['tensors']} tensors, dtypes {info['dtypes']}")
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
    print(f"wrote {out} ({format_size(out.stat().st_size)})")
    return 0


def cmd_make_test_model(args: argparse.Namespace) -> int:
    from .checkpoint.test_models import make_test_checkpoint
    from .checkpoint.writer import parse_dtype

    out = make_test_checkpoint(args.family, args.out, variant="tiny" if args.tiny else "full", seed=args.seed,
                               dtype=parse_dtype(args.dtype), prediction_type=args.prediction_type)
    print(f"wrote {out} ({format_size(out.stat().st_size)}): random weights, {args.family}"
          f"{' tiny' if args.tiny else ''}, seed {args.seed}")
    return 0


def _train_config(args: argparse.Namespace):
    """A YAML file, or the flags; ``--set name=value`` overrides either."""
    from .config import TrainConfig, apply_overrides, load_config

    if args.config:
        config = load_config(args.config)
    else:
        config = TrainConfig(method=args.method)
    flags = {"base": args.base, "images": args.images, "instance_prompt": args.instance_prompt,
             "prior.class_prompt": args.class_prompt, "prior.class_images": args.class_images,
             "steps": args.steps, "data.resolution": args.resolution, "lora.rank": args.rank,
             "learning_rate": args.learning_rate, "output": args.out, "output_dir": args.output_dir,
             "seed": args.seed}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.class_prompt:
        overrides.append("prior.enabled=true")
    if args.config and args.method_given:
        overrides.append(f"method={args.method}")
    return apply_overrides(config, overrides + list(args.set or []))


def _stop_on_signals(progress):
    """Ctrl-C / SIGTERM ask the loop to stop after the current step (it then saves a resumable state);
    a second Ctrl-C aborts at once."""
    import signal

    requested = []
    original = progress.should_stop

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        progress.on_message("stopping after this step and saving (Ctrl-C again to abort)")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    progress.should_stop = lambda: bool(requested) or original()
    return progress


def cmd_train(args: argparse.Namespace) -> int:
    from .progress import ConsoleProgress
    from .train import train

    config = _train_config(args)
    if args.dry_run:
        from .config import dump_config

        print(dump_config(config.validate().resolved()), end="")
        return 0
    result = train(config, _stop_on_signals(ConsoleProgress(every=args.log_every)), resume=args.resume or False,
                   overwrite=args.overwrite)
    if result.output is None:
        print(f"stopped before the first step: nothing was written ({result.seconds:.1f} s)")
        return 0
    print(f"{'stopped' if result.stopped else 'done'}: {result.steps} steps in {result.seconds:.1f} s, "
          f"peak memory {result.peak_memory_bytes / 2**30:.2f} GiB -> {result.output}")
    if result.stopped and result.state:
        print(f"resume with the same command plus --resume (state: {result.state})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .progress import ConsoleProgress

    summary = run_demo(args.out_dir, steps=args.steps, progress=ConsoleProgress(every=10))
    print(json.dumps(summary, indent=1))
    return 0


class _MethodAction(argparse.Action):
    """Remembers that --method was typed, so it can override a YAML file's method."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.method_given = True


def _add_train_parser(verbs) -> None:
    p = verbs.add_parser("train", help="train a LoRA / DreamBooth-LoRA / DreamBooth from a checkpoint and images",
                         description="Train from flags, or from a YAML config (examples/*.yaml) with --set "
                                     "overrides. Ctrl-C stops within a step and saves a resumable state.")
    p.add_argument("config", nargs="?", help="YAML config file (flags and --set override it)")
    p.add_argument("--method", choices=("lora", "dreambooth_lora", "dreambooth"), default="dreambooth_lora",
                   action=_MethodAction)
    p.add_argument("--base", help="base checkpoint (.safetensors / .ckpt, original single-file layout)")
    p.add_argument("--images", help="folder of instance images (kohya 'N_token class' subfolders, .txt captions)")
    p.add_argument("--instance-prompt", help="e.g. 'a photo of sks dog'")
    p.add_argument("--class-prompt", help="e.g. 'a photo of dog' (turns on prior preservation)")
    p.add_argument("--class-images", help="folder of class images (missing ones are generated and kept there)")
    p.add_argument("--steps", type=int)
    p.add_argument("--resolution", type=int)
    p.add_argument("--rank", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output LoRA .safetensors (default <output-dir>/<method>.safetensors)")
    p.add_argument("--output-dir", help="work folder: caches, samples, loss.png, losses.csv, resumable state")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any config field, e.g. lora.alpha=8")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="STATE",
                   help="continue from <output-dir>/state.pt (or from the state file named)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (resuming the run "
                                                            "that wrote it needs no --overwrite)")
    p.add_argument("--log-every", type=int, default=10, help="print a progress line every N steps")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=cmd_train, method_given=False)

    p = verbs.add_parser("demo", help="teach the shipped toy-world model a new subject and compare (offline)")
    p.add_argument("--out-dir", default="outputs/demo")
    p.add_argument("--steps", type=int, default=DEMO_STEPS)
    p.set_defaults(run=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainers",
                                     description="Booth: fine-tune Stable Diffusion (LoRA, DreamBooth) offline.")
    parser.add_argument("-v", "--verbose", "--debug", action="store_true",
                        help="show library log messages, and the stack trace of an error (also BOOTH_DEBUG=1)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("inspect", help="describe a checkpoint (family, prediction type, "
                         "parameters) or a LoRA (family, ranks, modules), with metadata")
    p.add_argument("file", help="single-file checkpoint or LoRA (.safetensors, .ckpt, .pt)")
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
    _add_train_parser(verbs)
    for add_commands in (add_lora_commands, add_evaluate_commands, add_bench_commands, add_toyworld_commands):
        add_commands(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.verbose or os.environ.get("BOOTH_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
        return code
    except BrokenPipeError:  # e.g. `inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (BoothError, OSError) as error:
        if debug:
            raise
        print(f"error: {error if isinstance(error, BoothError) else describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """diffusers/transformers print advice meant for hub users; keep the CLI's output ours."""
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
