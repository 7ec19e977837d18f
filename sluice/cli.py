"""The ``sluice`` command line.

Core commands live here; each part of the project adds its own from a ``commands`` module with
``add_commands(subparsers)`` (see ``PLUGIN_MODULES``). Bad input raises :class:`SluiceError`,
which becomes one line on stderr and exit status 2. Heavy imports (torch, amaranth) happen
inside the handlers so that ``sluice --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sluice import __version__
from sluice.errors import RunFailed, SluiceError
from sluice.hw.commands import add_params
from sluice.sim.runner import SIMULATORS as RTL_SIMULATORS

PLUGIN_MODULES = (
    "sluice.demo",
    "sluice.bench",
    "sluice.model.commands",
    "sluice.hw.commands",
    "sluice.sim.commands",
    "sluice.boards.commands",
)


def _size(text: str) -> tuple[int, int]:
    try:
        if "x" in text:
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 8 or 6x10") from None


def _run_layer_rtl(layer, args):
    try:
        runner = importlib.import_module("sluice.sim.runner")
    except ModuleNotFoundError as e:
        if e.name != "sluice.sim.runner":
            raise
        raise SluiceError(f"--sim {args.sim}: the RTL runner is not part of this build "
                          "(sluice.sim.runner is missing)") from None
    from sluice.hw.commands import params_from_args

    return runner.run_layer_rtl(layer, sim=args.sim, params=params_from_args(args),
                                dense=args.dense)


def check_against_refs(layer, result, dense: bool) -> int:
    """Compare a run with the layer file's ``y_ref``/``gate_ref`` (when it has them and the run
    was not forced dense); print the verdict; 1 on a mismatch, else 0."""
    if layer.y_ref is None or dense:
        return 0
    ok_y = bool((result.y == layer.y_ref).all())
    ok_g = layer.gate_ref is None or bool((result.gate == layer.gate_ref).all())
    if ok_y and ok_g:
        print("matches y_ref" + (" and gate_ref" if layer.gate_ref is not None else ""))
        return 0
    bad = int((result.y != layer.y_ref).sum())
    print(f"MISMATCH against the layer file's references: {bad} outputs differ, "
          f"gate {'ok' if ok_g else 'differs'}", file=sys.stderr)
    return 1


def cmd_run_layer(args) -> int:
    from sluice.model.layerfile import Result, read_layer, write_result
    from sluice.model.reference import run_reference, work_figures

    if not args.output.endswith(".npz"):
        raise SluiceError(f"-o: {args.output!r} must end in .npz (e.g. OUT.result.npz)")
    layer = read_layer(args.layer)
    if args.sim == "reference":
        y, gate = run_reference(layer, dense=args.dense, check=False)
        result = Result(y=y, gate=gate, runner="reference")
    else:
        result = _run_layer_rtl(layer, args)
    write_result(args.output, result)

    fig = work_figures(layer, result.gate, result.rows, result.cols)
    mode = "dense" if args.dense else ("gated" if layer.gated else "dense layer")
    print(f"{layer.name}: {layer.c_in}->{layer.c_out} ch, {layer.h_in}x{layer.w_in} -> "
          f"{layer.h_out}x{layer.w_out}, K={layer.kernel} stride={layer.stride} "
          f"pad={layer.padding} "
          f"p={layer.partitions}, "
          f"{mode}, {result.runner}: gate rate {fig['gate_rate']:.3f}, "
          f"MAC reduction {fig['reduction']:.2f}x, cycles {result.cycles}")
    note = _column_order_note(args.layer, layer) if layer.gated and not args.dense else None
    if note:
        print(note)
    status = check_against_refs(layer, result, args.dense)
    print(f"wrote {args.output}")
    return status


def _column_order_note(layer_path, layer):
    """A line saying so when the layer file sits in an export whose manifest gives its layer a
    host column order (``sluice column-order``), which a single layer run does not use."""
    import json

    mpath = Path(layer_path).parent / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    for e in manifest.get("layers", []) if isinstance(manifest, dict) else []:
        if isinstance(e, dict) and e.get("name") == layer.name and e.get("column_order"):
            return (f"note: {mpath} gives {layer.name} a host column order; run-layer runs the "
                    "layer file as exported (run-model and cycles on the export use the order: "
                    "other cycles, the same results)")
    return None


def cmd_make_layer(args) -> int:
    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import extreme_sums_layer, make_layer

    if args.extreme_sums:
        layer = extreme_sums_layer(args.cin, seed=args.seed, name=args.name or "extreme_sums")
    else:
        layer = make_layer(c_in=args.cin, c_out=args.cout, size=args.size, kernel=args.kernel,
                           stride=args.stride, padding=args.padding, partitions=args.partitions,
                           base=args.base, gate_rate=args.gate_rate, residual=args.residual,
                           relu=args.relu, dense=args.dense, seed=args.seed,
                           name=args.name or "random")
    write_layer(args.output, layer)
    print(f"wrote {args.output}: {layer.name}, gate rate {layer.gate_ref.mean():.3f}")
    return 0


def cmd_info(args) -> int:
    from sluice.model.layerfile import read_layer, read_result

    for path in args.files:
        if str(path).endswith(".result.npz"):
            r = read_result(path)
            print(f"{path}: result by {r.runner}, y {r.y.shape}, gate rate {r.gate.mean():.3f}, "
                  f"cycles {r.cycles}, array {r.rows}x{r.cols}, counters {r.counters}")
            continue
        layer = read_layer(path)
        extras = [n for n in ("thresh", "residual", "y_ref", "gate_ref")
                  if getattr(layer, n) is not None]
        print(f"{path}: {layer.name}: x {layer.x.shape} w {layer.w.shape} -> {layer.out_shape}, "
              f"K={layer.kernel} stride={layer.stride} padding={layer.padding} "
              f"p={layer.partitions} base={layer.base} relu={layer.relu}; "
              f"has {', '.join(extras) or 'no optional fields'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Sluice: channel-gating CNN accelerator generator.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run-layer", help="run one layer file and write a result file",
                       description="Run LAYER.npz on the integer reference or the RTL "
                                   "(SPEC section 6) and write OUT.result.npz. If the layer "
                                   "file holds y_ref/gate_ref, the result is checked against "
                                   "them (exit 1 on a mismatch).")
    p.add_argument("layer", metavar="LAYER.npz")
    p.add_argument("-o", "--output", required=True, metavar="OUT.result.npz")
    p.add_argument("--sim", choices=("reference", *RTL_SIMULATORS), default="reference",
                   help="runner (default: reference)")
    add_params(p)  # the instance an RTL run simulates
    p.add_argument("--dense", action="store_true",
                   help="switch gating off: every output computes the full sum")
    p.set_defaults(func=cmd_run_layer)

    p = sub.add_parser("make-layer", help="write a random valid layer file",
                       description="Write a random layer file with y_ref/gate_ref; the "
                                   "thresholds are set to give about --gate-rate of gates on.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.layer.npz")
    p.add_argument("--cin", type=int, default=8, help="input channels (default 8)")
    p.add_argument("--cout", type=int, default=8, help="output channels (default 8)")
    p.add_argument("--size", type=_size, default=(6, 6), help="input map, H or HxW (default 6)")
    p.add_argument("--kernel", type=int, default=3, help="kernel size K (default 3)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", type=int, default=1)
    p.add_argument("--partitions", type=int, default=4, help="p (default 4)")
    p.add_argument("--base", default="group", help="group or first (default group)")
    p.add_argument("--gate-rate", type=float, default=0.3, help="target share of gates on")
    p.add_argument("--residual", action="store_true", help="add a residual input")
    p.add_argument("--no-relu", dest="relu", action="store_false", help="clamp at -128, not 0")
    p.add_argument("--dense", action="store_true", help="an ungated layer (no thresh, p = 1)")
    p.add_argument("--extreme-sums", action="store_true",
                   help="instead: a gated 1x1 layer (4 outputs, 3x3 map, p = 2) whose sums reach "
                        "both ends of what --cin products of weights in [-127, 127] give; with "
                        "--cin = an instance's --wgt-depth it checks the sums' width (sum_bits); "
                        "uses only --cin (even), --seed and --name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None,
                   help="the layer's name (default random, or extreme_sums)")
    p.set_defaults(func=cmd_make_layer)

    p = sub.add_parser("info", help="validate layer/result files and summarise them",
                       description="Read each file with the SPEC readers (full validation) "
                                   "and print a one-line summary.")
    p.add_argument("files", nargs="+", metavar="FILE.npz")
    p.set_defaults(func=cmd_info)

    for mod_name in PLUGIN_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        mod.add_commands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # messages name the command as typed: "sluice board run-layer: error: ..."
    args.command = " ".join(filter(None, (args.command, getattr(args, "board_command", None))))
    try:
        return int(args.func(args) or 0)
    except SluiceError as e:
        print(f"sluice {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"sluice {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sluice {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if e.filename is None:  # not about a path the user named: a real failure, shown whole
            raise
        # an output path that cannot be created or written (a read-only or missing place,
        # a file where a folder must be), or an input that vanished after its check
        why = ("exists and is not a folder" if isinstance(e, FileExistsError) else e.strerror)
        print(f"sluice {args.command}: error: {e.filename}: {why}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
