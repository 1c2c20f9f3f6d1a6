"""The ``compare`` verb of the command line."""

from __future__ import annotations

import argparse


def cmd_compare(args: argparse.Namespace) -> int:
    from ..progress import ConsoleProgress
    from .compare import run_compare
    from .config import dump_compare_config, load_compare_config

    overrides = list(args.set or []) + ([f"output_dir={args.out_dir}"] if args.out_dir else [])
    config = load_compare_config(args.config, overrides).validate()
    if args.dry_run:
        print(dump_compare_config(config), end="")
        return 0
    result = run_compare(config, ConsoleProgress())
    for entry in result.entries:
        scores = "  ".join(f"{name} {entry.summary(name).text()}" for name in result.metrics)
        print(f"{entry.label}: {scores}  {entry.seconds_per_image:.3f} s/image")
    print(f"report: {result.files['report']}")
    return 0


def add_commands(verbs) -> None:
    p = verbs.add_parser("compare", help="score base vs tuned models (CLIP-T, CLIP-I, DINO) and write a report",
                         description="Generate the same prompts x seeds with every model variant, score the images "
                                     "and write a grid, plots, CSV/JSON tables and report.html. Lists in the config "
                                     "(train steps, learning rates, inference steps, LoRA strengths) make a sweep. "
                                     "See examples/compare.yaml.")
    p.add_argument("config", help="comparison YAML (examples/compare.yaml)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any config field, e.g. seeds=[0,1]")
    p.add_argument("--out-dir", help="output folder (overrides output_dir)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=cmd_compare)
