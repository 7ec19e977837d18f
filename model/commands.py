"""``sluice train``, ``sluice eval``, ``sluice export``: registered by sluice/cli.py.

Handlers import torch lazily so that ``sluice --help`` stays fast.
"""

from __future__ import annotations


def _train(args) -> int:
    from .train import run
    return run(args)


def add_commands(sub) -> None:
    from . import train
    p = sub.add_parser("train", help="train a (gated) ResNet-18")
    train.add_arguments(p)
    p.set_defaults(func=_train)
    add_eval(sub)
    add_export(sub)


def _eval(args) -> int:
    from .evaluate import run
    return run(args)


def add_eval(sub) -> None:
    from . import evaluate
    p = sub.add_parser("eval", help="top-1, MAC reduction and gate rates of checkpoints")
    evaluate.add_arguments(p)
    p.set_defaults(func=_eval)


def _export(args) -> int:
    from .export import run
    return run(args)


def add_export(sub) -> None:
    from . import export
    p = sub.add_parser("export", help="quantise a checkpoint and write layer files + manifest")
    export.add_arguments(p)
    p.set_defaults(func=_export)
