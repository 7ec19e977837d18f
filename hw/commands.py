"""Hardware subcommands of ``sluice``: verilog, lint, regmap, cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from sluice.errors import SluiceError

WAIVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lint_waivers.vlt")

#: The instance options, one per HwParams field but ``gating`` (``--dense-only``/``--gated``):
#: field -> help text without its default, which each command adds (the default instance's
#: value for ``sluice verilog``, ``cycles``, ``run-layer`` ...; "the board's" for ``sluice
#: build`` and ``sluice board ...``). ``add_instance_options`` makes them
#: ``--field-name`` options (integers; ``pe_mult`` one of ``PE_MULTS``).
PARAM_OPTIONS = {
    "rows": "array rows (output pixels; 2..32)",
    "cols": "array columns (output channels; 2..32)",
    "act_depth": "activation-buffer bytes per copy (power of two; a layer whose input does not "
                 "fit runs in bands of output rows, each loading its own input rows and every "
                 "tile's weights again)",
    "wgt_depth": "weight-buffer words per column and bank (power of two; must hold C_in*K*K of "
                 "every layer to be run: 1152 for the demo network's 128-channel 3x3 layers)",
    "pix_depth": "output pixels per job (power of two; larger maps run in bands)",
    "skip_cols": "skip group width in columns (divides the columns; wider groups: fewer "
                 "activation-buffer copies and feeds, fewer skipped cycles)",
    "stream_width": "input stream bytes per beat (0: automatic)",
    "pe_mult": "element multipliers as '*' (dsp: DSP blocks on an FPGA) or as shifted partial "
               "products (logic: LUTs and carries, the DSPs left to the post-processing)",
    "post_cols": "columns per post-processing unit (divides the columns; 1: one unit per "
                 "column; the column count: one shared unit, far less logic, the drain taking "
                 "that many cycles per row)",
    "act_share": "skip groups per activation-buffer copy (1 or 2: two groups read one copy "
                 "through its two ports, halving the copies, the passes then waiting for all "
                 "activations; true dual-port RAM: ECP5, not iCE40)",
    "act_width": "activation-buffer word bytes (power of two up to the stream width; 0: the "
                 "stream width; narrow words fill shallow copies' block RAMs and take more "
                 "cycles per beat)",
    "row_slices": "1, 2 or 3: with 2, a conditional pass with at most rows/2 pixels per skip "
                  "group runs each pixel on two rows, splitting its conditional channels (a "
                  "second weight read); with 3 also, on 3x3 layers, one with at most rows/4 "
                  "on three rows, a kernel row each (a third read)",
    "feed_regs": "registers between the buffers' block-RAM data and the array edge (1 or 2; 2: "
                 "a cycle of its own for the route out of each block RAM, the sums a cycle "
                 "later)",
    "stacking": "1: the pixel walker skips the rows between images stacked along the height "
                "(descriptor IMG_ROWS, IMG_GAP; run-model --images); 0: left out, less logic, "
                "stacked images then each run in bands of their own",
}


def option_args(values: dict) -> list[str]:
    """``{HwParams field: value}`` as the command-line options that give them
    (``["--post-cols", "2", ...]``), as ``add_instance_options`` names them; a flag field's
    value as the 0 or 1 its integer option takes (``--stacking 1``, not ``True``)."""
    return [a for field, v in values.items() for a in (option_name(field), option_value(v))]


def option_value(v) -> str:
    """A field's value as its option takes it: a flag as 0 or 1, anything else as written."""
    return str(int(v)) if isinstance(v, bool) else str(v)


def option_name(field: str) -> str:
    """The option of an ``HwParams`` field: ``post_cols`` -> ``--post-cols``."""
    return "--" + field.replace("_", "-")


def add_instance_options(p, fields=None, default=None):
    """``--field-name`` options for the ``HwParams`` fields ``fields`` (default: all of
    ``PARAM_OPTIONS``), each defaulting to None (not given), with its help from
    ``PARAM_OPTIONS`` and ``default`` (a text) or the default instance's value appended."""
    from sluice.hw.params import DEFAULT, PE_MULTS
    choices = {"pe_mult": PE_MULTS}  # the text-valued fields (a new one must be listed here)
    for field in fields or PARAM_OPTIONS:
        value = getattr(DEFAULT, field)
        text = f"{PARAM_OPTIONS[field]}; default {default or option_value(value)}"
        if isinstance(value, str):
            p.add_argument(option_name(field), choices=choices[field], default=None,
                           help=text)
        else:
            p.add_argument(option_name(field), type=int, default=None, help=text)


def add_params(p):
    """The generator's parameters as options (``sluice verilog``, ``lint``, ``regmap``,
    ``cycles``, ``run-layer``, ``run-model``); ``params_from_args`` turns them into
    ``HwParams``: the default instance's, or with ``--board`` a board build's, with the options
    given on top."""
    p.add_argument("--board", default=None,
                   help="start from a board build's instance instead of the default one: its "
                        "buffer depths, stream width and skip groups, as `sluice build --board "
                        "NAME` makes them (the board's default build: dense-only on the "
                        "iCEBreaker; `sluice board list`); the other options override it")
    add_instance_options(p)
    p.add_argument("--dense-only", action="store_true",
                   help="leave the gating hardware out (gate unit, skip controller, active "
                        "lists, per-group feeds): the baseline for the cost of gating")
    p.add_argument("--gated", action="store_true",
                   help="with --board on a board whose default build is dense-only (the "
                        "iCEBreaker): its gated build (`sluice build --gated`)")


def params_from_args(args):
    import dataclasses

    from sluice.hw.params import HwParams
    if args.dense_only and args.gated:
        raise SluiceError("--dense-only and --gated: pick one")
    given = {f: getattr(args, f) for f in PARAM_OPTIONS if getattr(args, f) is not None}
    if args.board:
        from sluice.boards.platforms import get_board
        board = get_board(args.board)
        params = board.params(**given)
        dense = args.dense_only or not (board.gated or args.gated)
    else:
        params = HwParams(**given)
        dense = args.dense_only
    return dataclasses.replace(params, gating=False) if dense else params


def cmd_verilog(args) -> int:
    from sluice.hw.verilog import verilog_text, write_atomic
    params = params_from_args(args)
    if not args.output.endswith(".v"):
        raise SluiceError(f"-o: {args.output!r} must end in .v")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(args.output, verilog_text(params))
    print(f"wrote {args.output} ({params.summary()})")
    return 0


def run_lint(verilog_path: str) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` with the waiver file; raises if verilator is missing."""
    exe = shutil.which("verilator")
    if exe is None:
        raise SluiceError("verilator is not installed (apt-get install verilator)")
    from sluice.hw.verilog import TOP_NAME
    return subprocess.run([exe, "--lint-only", "-Wall", "--top-module", TOP_NAME, WAIVERS,
                           verilog_path], capture_output=True, text=True)


def cmd_lint(args) -> int:
    from sluice.hw.verilog import verilog_text
    params = params_from_args(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.verilog or os.path.join(tmp, "sluice.v")
        if not args.verilog:
            with open(path, "w") as f:
                f.write(verilog_text(params))
        proc = run_lint(path)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode == 0:
        print(f"lint clean ({params.rows}x{params.cols}; waivers: {WAIVERS})")
    return 0 if proc.returncode == 0 else 1


def cmd_regmap(args) -> int:
    from sluice.hw.params import regmap_markdown
    from sluice.hw.verilog import write_atomic
    text = regmap_markdown(params_from_args(args))
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_cycles(args) -> int:
    from sluice.hw.cycle_model import predict
    from sluice.model.layerfile import read_layer
    from sluice.model.reference import run_reference, work_figures
    params = params_from_args(args)
    if os.path.isdir(args.layer):
        if args.dense:
            raise SluiceError(f"--dense: applies to a layer file, not to the export folder "
                              f"{args.layer} (its report has both runs)")
        return _cycles_network(args.layer, params, args.images, args.data_dir, args.stacked)
    if args.images != 1 or args.stacked:
        raise SluiceError(f"--images/--stacked: apply to an export folder, not to the layer file "
                          f"{args.layer}")
    layer = read_layer(args.layer)
    _, gate = run_reference(layer)
    pred = predict(layer, gate, params, dense=args.dense)
    dense = predict(layer, None, params, dense=True)
    fig = work_figures(layer, gate, params.rows, params.cols)
    print(f"{layer.name}: {params.summary()}, "
          f"{'dense' if args.dense or not layer.gated else 'gated'} run")
    for key, value in pred.items():
        print(f"  {key:14s} {value}")
    print(f"  bound_cycles   {fig['bound_cycles']}")
    util = fig["macs_dense"] / (dense["cycles"] * params.rows * params.cols)
    print(f"  dense cycles   {dense['cycles']} (utilisation {util:.3f})")
    if layer.gated and not args.dense:
        speedup = dense["cycles"] / pred["cycles"]
        print(f"  speedup        {speedup:.3f}  reduction {fig['reduction']:.3f}  "
              f"efficiency {speedup / fig['reduction']:.3f}")
    return 0


def network_cycles(export_dir, params, images: int = 1, data_dir=None,
                   stacked: bool = False) -> dict:
    """:func:`sluice.sim.model_run.predict_network` summed over ``images`` test images, each
    run alone: the export's sample image and the ``images - 1`` after it in its data set
    (``stacked``: the images stacked, the throughput mode of ``run-model --images``, one run);
    ``column_order``: the manifest's ``column_order_info`` (None: as exported)."""
    from sluice.hw.levers import sample_images
    from sluice.model.intnet import IntNet
    from sluice.sim.model_run import (bind_export, bind_export_stacked, check_images,
                                      predict_network)
    check_images(images)
    export = IntNet(export_dir)  # read once, for every image
    if stacked:
        tot = predict_network(bind_export_stacked(export, images, data_dir), params)
        tot["images"] = images
        tot["column_order"] = export.manifest.get("column_order_info")
        return tot
    xs = [None] + (sample_images(export, images, data_dir)[1:] if images > 1 else [])
    tot = None
    for x in xs:
        net = predict_network(bind_export(export, x), params)
        if tot is None:
            tot = net
            continue
        for k, v in net.items():
            if k != "layers" and not isinstance(v, str):
                tot[k] += v
        for a, b in zip(tot["layers"], net["layers"]):
            for k in ("cycles_gated", "cycles_dense", "macs_dense", "macs_theory"):
                a[k] += b[k]
    for r in tot["layers"]:
        r["reduction"] = r["macs_dense"] / r["macs_theory"]
    tot["speedup"] = tot["cycles_dense"] / tot["cycles_gated"]
    tot["reduction"] = tot["macs_dense"] / tot["macs_theory"]
    tot["efficiency"] = tot["speedup"] / tot["reduction"]
    tot["images"] = images
    tot["column_order"] = export.manifest.get("column_order_info")
    return tot


def _cycles_network(export_dir, params, images=1, data_dir=None, stacked=False) -> int:
    from sluice.sim.model_run import column_order_note
    net = network_cycles(export_dir, params, images, data_dir, stacked)
    what = ("the export's sample image" if images == 1 else
            f"{images} images {'stacked' if stacked else 'each alone'} (the export's sample "
            f"and the {images - 1} after it)")
    order = f"; {column_order_note(net['column_order'])}" if net["column_order"] else ""
    print(f"{export_dir}: {params.summary()}, {len(net['layers'])} layers, {what}{order}")
    print(f"  {'layer':24s} {'dense':>8s} {'gated':>8s} {'speedup':>8s} {'reduction':>9s}")
    for r in net["layers"]:
        print(f"  {r['layer']:24s} {r['cycles_dense']:8d} {r['cycles_gated']:8d} "
              f"{r['cycles_dense'] / r['cycles_gated']:8.3f} {r['reduction']:9.3f}")
    print(f"  network: dense {net['cycles_dense']} cycles, gated {net['cycles_gated']}, "
          f"speedup {net['speedup']:.3f}, reduction {net['reduction']:.3f}, "
          f"efficiency {net['efficiency']:.3f}")
    pct = {t: 100 * net["loss_" + t] / net["cycles_gated"]
           for t in ("ideal", "base_fill", "skip_tile", "packing", "partial_pass", "lockstep",
                     "overhead")}
    print(f"  gated cycles: ideal {pct['ideal']:.1f}%, base_fill {pct['base_fill']:.1f}%, "
          f"skip_tile {pct['skip_tile']:.1f}%, packing {pct['packing']:.1f}% (partial passes "
          f"{pct['partial_pass']:.1f}%, lockstep {pct['lockstep']:.1f}%), overhead "
          f"{pct['overhead']:.1f}%")
    print(f"  overhead: loads {100 * net['load_gated'] / net['cycles_gated']:.1f}%, stalls "
          f"{100 * net['stall_gated'] / net['cycles_gated']:.1f}% of the gated cycles; "
          f"efficiency without them in either run {overhead_bound(net, ('load', 'stall')):.3f} "
          f"(without loads only {overhead_bound(net, ('load',)):.3f})")
    three = (f", {net['sliced3_gated']} of them on three slices" if params.row_slices == 3
             else "")
    print(f"  row slices: {net['sliced_gated']} of the gated run's {net['passes_gated']} passes "
          f"sliced{three} (HwParams.row_slices {params.row_slices})")
    return 0


def column_orders(net, params, calib: int, iters: int, data_dir=None) -> dict:
    """Every gated layer's column order (``levers.searched_order``) fitted to the gate bits of
    the first ``calib`` training images of the data set of the export ``net`` (an ``IntNet``)
    for the instance ``params``: ``{layer name: order}``."""
    from sluice.hw.levers import dataset_images, network_tensors, searched_order
    gates = [network_tensors(net, x)[1] for x in
             dataset_images(net, "train", 0, calib, data_dir, "--calib")]
    out = {}
    for e, layer in net.layers:
        if layer.gated:
            out[e["name"]] = searched_order([g[e["name"]] for g in gates], layer, params,
                                            iters)
    return out


#: ``sluice column-order``'s defaults (``sluice demo --column-order`` uses them too)
ORDER_CALIB, ORDER_ITERS = 256, 10000


def write_column_orders(export_dir, params, calib: int = ORDER_CALIB, iters: int = ORDER_ITERS,
                        data_dir=None, clear: bool = False, out=None) -> str:
    """Fit the gated layers' column orders (:func:`column_orders`) into the export's
    ``manifest.json`` (atomically), or with ``clear`` remove them; with ``out``, into a copy
    of the export there instead (the export itself untouched; an earlier export at ``out`` is
    replaced only once the copy is complete). Returns what it did, one line."""
    import json
    from pathlib import Path

    import numpy as np

    from sluice.fileio import atomic_write_text
    from sluice.model.intnet import IntNet
    if out is not None:
        return _ordered_copy(Path(export_dir), Path(out), lambda d: write_column_orders(
            d, params, calib, iters, data_dir, clear))
    if calib < 1 and not clear:
        raise SluiceError(f"--calib: {calib} must be at least 1")
    if iters < 0:
        raise SluiceError(f"--iters: {iters} must be at least 0")
    if not params.gating and not clear:
        raise SluiceError("--dense-only: a dense-only instance runs no gated layer, so there is "
                          "no column order to fit (on the iCEBreaker pass --gated)")
    mpath = Path(export_dir) / "manifest.json"
    # (IntNet checks the export, and any orders it has, before the search; --clear reads only
    # the manifest, so that it mends one whose orders are broken)
    orders = {} if clear else column_orders(IntNet(export_dir), params, calib, iters, data_dir)
    manifest = json.loads(mpath.read_text())
    for e in manifest["layers"]:
        e.pop("column_order", None)
        if e["name"] in orders:
            e["column_order"] = [int(c) for c in orders[e["name"]]]
    manifest.pop("column_order_info", None)
    if orders:
        manifest["column_order_info"] = {
            "calibration": f"first {calib} training images", "iters": iters,
            "instance": params.summary()}
    atomic_write_text(mpath, json.dumps(manifest, indent=1) + "\n")
    if clear:
        return f"{mpath}: column orders removed (every layer as exported)"
    moved = sum(int((np.asarray(o) != np.arange(len(o))).sum()) for o in orders.values())
    return (f"{mpath}: column orders for {len(orders)} gated layers ({moved} channels moved), "
            f"fitted to the first {calib} training images for {params.summary()}")


def _ordered_copy(src, dest, fit) -> str:
    """Copy the export ``src`` to a temporary folder beside ``dest``, run ``fit`` on the copy,
    then put it in ``dest``'s place (an earlier export there is replaced, anything else is
    refused): a failed fit leaves ``dest`` as it was. Returns ``fit``'s line, naming
    ``dest``."""
    import shutil

    shown = str(dest)
    src, dest = src.resolve(), dest.resolve()
    if not (src / "manifest.json").is_file():
        raise SluiceError(f"{src}: not an export folder (no manifest.json)")
    if dest == src:
        raise SluiceError(f"-o {dest}: the export itself (leave -o out to write its manifest)")
    if src in dest.parents:
        raise SluiceError(f"-o {dest}: inside the export {src}")
    if dest.exists() and not (dest / "manifest.json").is_file():
        raise SluiceError(f"-o {dest}: exists and is not an export folder; not replaced")
    tmp = dest.parent / f".{dest.name}.tmp"
    old = dest.parent / f".{dest.name}.old"
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, tmp)
        line = fit(tmp)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return line.replace(str(tmp), shown)


def cmd_column_order(args) -> int:
    print(write_column_orders(args.export_dir, params_from_args(args), args.calib, args.iters,
                              args.data_dir, args.clear, args.out))
    return 0


def overhead_bound(net: dict, kinds) -> float:
    """The efficiency of :func:`network_cycles`' ``net`` with the LOAD_CYCLES ("load") and/or
    STALL_CYCLES ("stall") taken out of both the gated and the dense run: an upper bound for
    any overlap of the loads and of the phase and tile changes with the computation."""
    gated = net["cycles_gated"] - sum(net[k + "_gated"] for k in kinds)
    dense = net["cycles_dense"] - sum(net[k + "_dense"] for k in kinds)
    return dense / gated / net["reduction"]


def add_commands(sub) -> None:
    p = sub.add_parser("verilog", help="emit the accelerator as one Verilog file")
    p.add_argument("-o", "--output", required=True, help="output .v file")
    add_params(p)
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on the generated Verilog")
    p.add_argument("--verilog", help="lint this file instead of generating one")
    add_params(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("regmap", help="print the register map and stream format (Markdown)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    add_params(p)
    p.set_defaults(func=cmd_regmap)

    p = sub.add_parser("cycles", help="cycle model prediction for a layer file or an export",
                       description="Predict a layer's cycles with the cycle model (exact "
                                   "against the RTL), or, given an export folder (sluice "
                                   "export), every layer of the network on the export's sample "
                                   "image and the network's speedup and efficiency.")
    p.add_argument("layer", help="LAYER.npz, or an export folder holding manifest.json")
    p.add_argument("--dense", action="store_true", help="predict the dense-mode run")
    p.add_argument("--images", type=int, default=1,
                   help="export folder: sum over N images of its data set, each run alone "
                        "(the sample image and the N - 1 after it; default 1)")
    p.add_argument("--stacked", action="store_true",
                   help="with --images N: the N images stacked along the height, one run per "
                        "layer (the throughput mode of run-model --images N, whose jobs skip "
                        "the rows between the images)")
    p.add_argument("--data-dir", default=None, help="data set directory (--images)")
    add_params(p)
    p.set_defaults(func=cmd_cycles)

    p = sub.add_parser("column-order", help="fit the host's column order of an export's gated "
                                            "layers to calibration images",
                       description="Put each gated layer's output channels on the array's "
                                   "columns in an order fitted offline (within base groups) "
                                   "to the gate bits of the first N training images, so that "
                                   "a tile's skip groups finish their conditional passes "
                                   "together; written into the export's manifest.json, used by "
                                   "run-model, cycles and board run-model. The results are "
                                   "the same in any order; only the cycles change.")
    p.add_argument("export_dir", metavar="EXPORT_DIR")
    p.add_argument("--calib", type=int, default=ORDER_CALIB,
                   help=f"training images the order is fitted to (default {ORDER_CALIB})")
    p.add_argument("--iters", type=int, default=ORDER_ITERS,
                   help=f"channel swaps the search tries per layer (default {ORDER_ITERS})")
    p.add_argument("--clear", action="store_true",
                   help="remove the orders: every layer as exported")
    p.add_argument("-o", "--out", metavar="OUT_DIR", default=None,
                   help="write an ordered copy of the export to OUT_DIR (replacing an earlier "
                        "export there) and leave EXPORT_DIR as it is (default: write into "
                        "EXPORT_DIR's manifest.json)")
    p.add_argument("--data-dir", default=None, help="data set directory")
    add_params(p)
    p.set_defaults(func=cmd_column_order)
