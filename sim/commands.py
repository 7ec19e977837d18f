"""Commands of the verification part: ``sluice run-model``."""

from __future__ import annotations

from sluice.hw.commands import add_params
from sluice.sim.runner import SIMULATORS


def _cmd_run_model(args) -> int:
    from sluice.sim.model_run import cmd_run_model

    return cmd_run_model(args)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "run-model", help="run an exported network on the RTL, bit for bit, with cycle counts",
        description="Run every layer of a `sluice export` directory on the RTL (each fed with "
                    "the RTL's own earlier outputs), check outputs, gates and final logits "
                    "against the integer model, and write layers.md/.csv, speedup.png and "
                    "summary.json. Exit 1 on any mismatch.")
    p.add_argument("export_dir", metavar="EXPORT_DIR")
    p.add_argument("--sim", choices=SIMULATORS, default="icarus")
    add_params(p)  # the instance simulated: --rows, --cols, --skip-cols, --act-share, ...
    p.add_argument("--layers", type=int, default=0, help="only the first N layers (0: all)")
    p.add_argument("--images", type=int, default=1,
                   help="throughput mode: the export's sample image and the N-1 after it in "
                        "its data set, stacked along the height of every layer (default 1)")
    p.add_argument("--data-dir", default=None,
                   help="data set folder for --images (as for sluice train)")
    p.add_argument("-o", "--out", default="build/run-model", help="report folder")
    p.set_defaults(func=_cmd_run_model)
