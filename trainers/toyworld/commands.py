"""The ``toyworld`` verb: rebuild the shipped toy model and judge from a seed, or draw the subject's pictures."""

from __future__ import annotations

import argparse

from .settings import PretrainSettings


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from .pretrain import pretrain_world

    torch.set_num_threads(args.threads)
    settings = PretrainSettings(seed=args.seed, vae_steps=args.vae_steps, generator_steps=args.generator_steps,
                                judge_steps=args.judge_steps)
    pretrain_world(args.out_dir, settings)
    print(f"wrote {args.out_dir}: the toy model, its judge and pretrain_report.json")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from .subject import INSTANCE_PROMPT, write_instance_images

    paths = write_instance_images(args.out_dir, seed=args.seed)
    print(f"wrote {len(paths)} pictures of '{INSTANCE_PROMPT}' to {args.out_dir}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import torch

    from ..progress import ConsoleProgress
    from .study import run_study

    torch.set_num_threads(1)  # the toy model's tensors are too small for threads to pay
    result = run_study(args.out_dir, ConsoleProgress())
    print(f"study table: {result['table']}")
    return 0


def _at_least_one(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse prints the message as one line, exit 2)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_commands(verbs) -> None:
    defaults = PretrainSettings()
    p = verbs.add_parser("toyworld", help="the toy world: rebuild its pre-trained model and judge, draw its subject",
                         description="The toy world's model and CLIP judge ship with Booth (trainers/toyworld/weights); "
                                     "'pretrain' rebuilds both from a seed, 'images' writes the sks heart pictures.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("pretrain", help="train the toy model and judge from scratch (about 80 minutes on 2 CPU cores)")
    q.add_argument("--out-dir", default="outputs/toyworld")
    q.add_argument("--seed", type=int, default=defaults.seed)
    q.add_argument("--vae-steps", type=_at_least_one, default=defaults.vae_steps)
    q.add_argument("--generator-steps", type=_at_least_one, default=defaults.generator_steps)
    q.add_argument("--judge-steps", type=_at_least_one, default=defaults.judge_steps)
    q.add_argument("--threads", type=_at_least_one, default=1,
                   help="CPU threads (the shipped files were made with 1; other counts sum in another order)")
    q.set_defaults(run=cmd_pretrain)
    q = actions.add_parser("images", help="write the subject's instance pictures (a teal and magenta 'sks heart')")
    q.add_argument("--out-dir", default="outputs/toyworld/sks_heart")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(run=cmd_images)
    q = actions.add_parser("study", help="LoRA vs DreamBooth vs DreamBooth-LoRA on the toy subject, with sweeps: "
                                         "table, plots and report")
    q.add_argument("--out-dir", default="outputs/study")
    q.set_defaults(run=cmd_study)
