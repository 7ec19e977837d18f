"""``sluice bench``: the measurements quoted in the README (long; never part of the tests).

1. simulator speed: simulated cycles per second on Icarus and Verilator, default array;
2. dense utilisation on 3x3 layers whose channel counts are multiples of the array, measured on
   the RTL (loads counted) next to the cycle model;
3. the embedded-default network on the RTL: per-layer speedup, reduction, efficiency and the
   cycle model's error, and the wall time of ``run-model`` per simulator; then again, on the
   fastest simulator, with the host column order fitted into a copy of the export (``sluice
   column-order``, as ``make demo`` runs it), and in the throughput mode on that copy (the
   sample and the next seven test images stacked, ``sluice run-model --images 8``); then the
   smaller arrays whose efficiency reaches issue 4's 0.90 by the cycle model
   (:data:`SMALL_ARRAYS`: 2 x 2 and 4 x 4 with one-column skip groups);
4. the same network on other array shapes and skip-group widths, from the cycle model (exact
   against the RTL, step 3 checks it on the default): how efficiency trades against size;
5. efficiency levers from the cycle model (``sluice.hw.levers``): eight test images stacked
   (the throughput mode of ``sluice run-model --images N``, the rows between the images
   skipped; beside it the same images each run alone), independent skip groups, shared
   passes, a tile's last conditional pass on four channel slices and decoupled skip groups
   (estimates), as exported and, on the default instance, with the host column order.

Writes ``report.md`` and ``bench.json`` into the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from sluice.boards.platforms import ULX3S_85F_4X4_SKIP1, ULX3S_85F_8X8


def _now():
    return time.monotonic()


def sim_speed(sim, params, work: Path) -> dict:
    """Cycles per second on one gated and one dense run of a 16->16, 16x16, 3x3 layer."""
    from sluice.model.layerfile import read_result, write_layer
    from sluice.model.randlayer import make_layer
    from sluice.sim.runner import RtlSim

    t0 = _now()
    rtl = RtlSim(params, sim)
    build_s = _now() - t0
    layer = make_layer(c_in=16, c_out=16, size=(16, 16), partitions=4, gate_rate=0.2, seed=1,
                       name="speed")
    lpath = work / f"speed_{sim}.layer.npz"
    write_layer(lpath, layer)
    runs = [dict(layer=str(lpath), result=str(work / f"speed_{sim}_{m}.result.npz"),
                 dense=(m == "dense")) for m in ("gated", "dense")]
    t0 = _now()
    rtl.run(runs, workdir=work / f"speed_{sim}")
    run_s = _now() - t0
    cycles = sum(read_result(r["result"]).cycles for r in runs)
    return dict(sim=sim, build_s=round(build_s, 1), run_s=round(run_s, 2), cycles=cycles,
                cycles_per_s=round(cycles / run_s))


def dense_utilisation(sim, params, work: Path) -> list[dict]:
    from sluice.hw.cycle_model import predict
    from sluice.model.layerfile import read_result, write_layer
    from sluice.model.randlayer import make_layer
    from sluice.model.reference import work_figures
    from sluice.sim.runner import RtlSim

    shapes = [(16, 32), (32, 16), (64, 8), (128, 4)]
    layers, runs = [], []
    for c, size in shapes:
        layer = make_layer(c_in=c, c_out=c, size=(size, size), partitions=4, gate_rate=0.06,
                           seed=c, name=f"{c}->{c} @{size}x{size}")
        lpath = work / f"util_{c}.layer.npz"
        write_layer(lpath, layer)
        layers.append(layer)
        runs.append(dict(layer=str(lpath), result=str(work / f"util_{c}.result.npz"),
                         dense=True))
    RtlSim(params, sim).run(runs, workdir=work / "util")
    rows = []
    for layer, r in zip(layers, runs):
        res = read_result(r["result"])
        macs = work_figures(layer, res.gate)["macs_dense"]
        model = predict(layer, None, params, dense=True)["cycles"]
        rows.append(dict(layer=layer.name, cycles=res.cycles, model=model,
                         utilisation=macs / (res.cycles * params.rows * params.cols),
                         load_cycles=res.counters.get("load_cycles"),
                         stall_cycles=res.counters.get("stall_cycles")))
    return rows


# (rows, cols, skip_cols) for step 4; the default instance first
SHAPES = [(8, 8, 2), (8, 8, 1), (16, 16, 2), (8, 16, 2), (4, 8, 2), (4, 8, 1), (4, 4, 2),
          (4, 4, 1), (2, 4, 1), (2, 2, 1)]
# board builds as they are built (`sluice build --board NAME [OPTIONS]`: the board's buffer
# depths and stream width), after the shapes in step 4: the ULX3S 85F's default 4 x 4, the
# 8 x 8 that meets 100 MHz (boards/README.md), whose area options cost cycles, and the 4 x 4
# with one-column groups and the default instance's buffers
BOARD_INSTANCES = [("ulx3s-85f", {}), ("ulx3s-85f", ULX3S_85F_8X8),
                   ("ulx3s-85f", ULX3S_85F_4X4_SKIP1)]


def _options(opts: dict) -> str:
    from sluice.hw.commands import option_args
    return " ".join(option_args(opts))


def _suffix(row: dict) -> str:
    """A shape row's options as printed after its array size (" --post-cols 4 ..." or "")."""
    return f" {row['options']}" if row.get("options") else ""


def _instances():
    """(HwParams, options as printed) of step 4: the shapes, then the board builds."""
    from sluice.boards.platforms import get_board
    from sluice.hw.params import HwParams

    for r, c, s in SHAPES:
        yield HwParams(rows=r, cols=c, skip_cols=s), ""
    for name, opts in BOARD_INSTANCES:
        yield get_board(name).params(**opts), f"--board {name} {_options(opts)}".strip()


def array_shapes(export: Path) -> list[dict]:
    from sluice.sim.model_run import bind_export, predict_network

    bound = bind_export(export)  # the reference forward pass once, for every shape
    rows = []
    for p, options in _instances():
        net = predict_network(bound, p)
        rows.append(dict(rows=p.rows, cols=p.cols, skip_cols=p.skip_cols, options=options,
                         cycles_dense=net["cycles_dense"],
                         cycles_gated=net["cycles_gated"], speedup=net["speedup"],
                         efficiency=net["efficiency"],
                         macs_per_cycle=net["macs_dense"] / net["cycles_gated"],
                         **{k: net["loss_" + k] / net["cycles_gated"]
                            for k in ("skip_tile", "partial_pass", "lockstep", "overhead")}))
    return rows


# (rows, cols, skip_cols) and image counts for step 5; the default instance's again with the
# host column order (fitted to it in step 3)
#: images of step 3's throughput-mode run on the RTL and of step 5's stacked rows
BENCH_IMAGES = 8
#: step 3's smaller arrays on the RTL, (rows, cols, skip_cols, column order fitted, images):
#: the instances whose efficiency on the embedded network reaches issue 4's 0.90 by the cycle
#: model (step 4), checked on the RTL: 2 x 2 as exported, one image; 4 x 4 with its own
#: column order, the throughput mode
SMALL_ARRAYS = [(2, 2, 1, False, 1), (4, 4, 1, True, BENCH_IMAGES)]
LEVERS = [((8, 8, 2), (1, BENCH_IMAGES)), ((8, 8, 1), (1, BENCH_IMAGES))]
LEVERS_ORDERED = [((8, 8, 2), (1, BENCH_IMAGES))]


def levers(export: Path, ordered: Path | None = None) -> list[dict]:
    from sluice.hw.levers import sample_runs, study
    from sluice.hw.params import HwParams
    from sluice.model.intnet import IntNet

    plain = IntNet(export)
    runs = sample_runs(plain, max(max(n) for _, n in LEVERS + LEVERS_ORDERED))
    studies = [(plain, "as exported", LEVERS)]
    if ordered is not None:
        studies.append((IntNet(ordered), "host column order", LEVERS_ORDERED))
    out = []
    for net, order, shapes in studies:
        for (r, c, s), counts in shapes:
            for n in counts:  # (the same images: an order changes no output, only cycles)
                out.append(dict(rows=r, cols=c, skip_cols=s, order=order,
                                **study(net, runs[:n], HwParams(rows=r, cols=c,
                                                                skip_cols=s))))
    return out


def export_default(work: Path) -> Path:
    from sluice.model import export
    from sluice.model.checkpoint import DEFAULT_CHECKPOINT

    out = work / "export"  # exported afresh every time (seconds): never a stale checkpoint's
    export.run(argparse.Namespace(checkpoint=str(DEFAULT_CHECKPOINT), out=str(out),
                                  sample=0, calib=1000, percentile=99.99, data_dir=None,
                                  threads=2))
    return out


def small_arrays(exp: Path, work: Path, out: Path, sim: str) -> list[dict]:
    """Step 3's :data:`SMALL_ARRAYS` on the RTL: each one's summary with its instance, how it
    was run and the fit's and the run's wall times; none on Icarus (about 35 million simulated
    cycles, 44 times the default instance's network run), with a line saying so."""
    from sluice.hw.commands import write_column_orders
    from sluice.hw.params import HwParams
    from sluice.sim.model_run import run_model

    rows = []
    if sim != "verilator":
        print(f"      the smaller arrays skipped: they run on Verilator only (about 35 million "
              f"simulated cycles)", flush=True)
        return rows
    for r, c, s, ordered, n in SMALL_ARRAYS:
        p = HwParams(rows=r, cols=c, skip_cols=s)
        tag = f"{r}x{c}_skip{s}" + ("_ordered" if ordered else "") + (f"_x{n}" if n > 1 else "")
        src, t0, fit_s = exp, _now(), 0.0
        if ordered:
            src = work / f"export-ordered-{r}x{c}-skip{s}"
            print("      " + write_column_orders(exp, p, out=src), flush=True)
            fit_s = round(_now() - t0, 1)
        summ = run_model(src, out / f"network_{sim}_{tag}", sim=sim, params=p, images=n,
                         progress=lambda t: print("      " + t, flush=True))
        summ.update(rows=r, cols=c, skip_cols=s, ordered=ordered, fit_s=fit_s,
                    wall_s=round(_now() - t0 - fit_s, 1))
        rows.append(summ)
        print(f"      {sim}, {r}x{c} skip_cols {s}"
              + (", host column order" if ordered else "")
              + (f", {n} images stacked" if n > 1 else "") + f": {summ['wall_s']:.0f} s, "
              f"speedup {summ['speedup']:.2f}x, efficiency {summ['efficiency']:.3f}, bit-exact "
              f"{summ['bit_exact']}", flush=True)
    return rows


def cmd_bench(args) -> int:
    from sluice.hw.params import HwParams
    from sluice.sim.model_run import run_model
    from sluice.sim.runner import simulator_missing

    params = HwParams()
    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    sims = [s for s in args.sims.split(",") if s]
    for s in sims:
        why = simulator_missing(s)
        if why:
            print(f"bench: skipping {s}: {why}")
    sims = [s for s in sims if simulator_missing(s) is None]
    fast = "verilator" if "verilator" in sims else sims[0]
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "array": [params.rows, params.cols]}

    print("[1/5] simulator speed ...", flush=True)
    res["speed"] = [sim_speed(s, params, work) for s in sims]
    for r in res["speed"]:
        print(f"      {r['sim']}: {r['cycles_per_s']} cycles/s (build {r['build_s']} s)")

    print(f"[2/5] dense utilisation on 3x3 layers ({fast}) ...", flush=True)
    res["utilisation"] = dense_utilisation(fast, params, work)
    for r in res["utilisation"]:
        print(f"      {r['layer']}: {r['utilisation']:.3f} ({r['cycles']} cycles, model "
              f"{r['model']})")

    print("[3/5] the embedded-default network on the RTL ...", flush=True)
    exp = export_default(work)
    res["network"] = {}
    for s in (sims if args.network_all else [fast]):
        t0 = _now()
        summ = run_model(exp, out / f"network_{s}", sim=s, params=params,
                         progress=lambda t: print("      " + t, flush=True))
        summ["wall_s"] = round(_now() - t0, 1)
        res["network"][s] = summ
        print(f"      {s}: {summ['wall_s']:.0f} s, speedup {summ['speedup']:.2f}x, reduction "
              f"{summ['reduction']:.2f}x, efficiency {summ['efficiency']:.3f}, bit-exact "
              f"{summ['bit_exact']}")
    from sluice.hw.commands import write_column_orders
    t0 = _now()
    print("      " + write_column_orders(exp, params, out=work / "export-ordered"), flush=True)
    fit_s = round(_now() - t0, 1)
    summ = run_model(work / "export-ordered", out / f"network_{fast}_ordered", sim=fast,
                     params=params, progress=lambda t: print("      " + t, flush=True))
    summ["fit_s"], summ["wall_s"] = fit_s, round(_now() - t0 - fit_s, 1)
    res["network_ordered"] = {fast: summ}
    print(f"      {fast}, host column order (fitted in {fit_s:.0f} s): {summ['wall_s']:.0f} s, "
          f"speedup {summ['speedup']:.2f}x, efficiency {summ['efficiency']:.3f}, bit-exact "
          f"{summ['bit_exact']}")
    # the throughput mode on the RTL: the ordered export's sample and the images after it
    t0 = _now()
    summ = run_model(work / "export-ordered", out / f"network_{fast}_stacked", sim=fast,
                     params=params, images=BENCH_IMAGES,
                     progress=lambda t: print("      " + t, flush=True))
    summ["wall_s"] = round(_now() - t0, 1)
    res["network_stacked"] = {fast: summ}
    print(f"      {fast}, {BENCH_IMAGES} images stacked: {summ['wall_s']:.0f} s, "
          f"{summ['cycles_gated_per_image']:,.0f} gated cycles per image, efficiency "
          f"{summ['efficiency']:.3f}, bit-exact {summ['bit_exact']}")

    res["network_small"] = small_arrays(exp, work, out, fast)

    print("[4/5] the network on other array shapes (cycle model) ...", flush=True)
    res["shapes"] = array_shapes(exp)
    for r in res["shapes"]:
        opts = _suffix(r)
        print(f"      {r['rows']}x{r['cols']} skip_cols {r['skip_cols']}{opts}: speedup "
              f"{r['speedup']:.2f}x, efficiency {r['efficiency']:.3f}, "
              f"{r['macs_per_cycle']:.1f} dense-equivalent MACs/cycle")

    print("[5/5] efficiency levers (cycle model; python -m sluice.hw.levers) ...", flush=True)
    res["levers"] = levers(exp, work / "export-ordered")
    for r in res["levers"]:
        print(f"      {r['rows']}x{r['cols']} skip_cols {r['skip_cols']}, {r['order']}, "
              f"{r['images']} image(s) stacked: efficiency {r['efficiency_lockstep']:.3f}, independent "
              f"groups (estimate) {r['efficiency_independent']:.3f}, shared passes (estimate) "
              f"{r['efficiency_shared']:.3f}, four channel slices (estimate) "
              f"{r['efficiency_sliced']:.3f}, decoupled groups (estimate) "
              f"{r['efficiency_decoupled']:.3f}")

    (out / "bench.json").write_text(json.dumps(res, indent=1) + "\n")
    _write_report(out, res, fast)
    print(f"bench report: {out / 'report.md'}")
    return 0


def _write_report(out: Path, res: dict, fast: str) -> None:
    L = ["# Sluice benchmark", "", f"Machine: {res['machine']}; array "
         f"{res['array'][0]}x{res['array'][1]}. Command: `make bench`.", "",
         "## Simulator speed", "", "| simulator | build s | cycles | run s | cycles/s |",
         "|---|---|---|---|---|"]
    for r in res["speed"]:
        L.append(f"| {r['sim']} | {r['build_s']} | {r['cycles']} | {r['run_s']} | "
                 f"{r['cycles_per_s']} |")
    L += ["", f"## Dense utilisation, 3x3 layers ({fast}, loads counted)", "",
          "| layer | cycles (RTL) | cycle model | utilisation | load cycles | stall cycles |",
          "|---|---|---|---|---|---|"]
    for r in res["utilisation"]:
        L.append(f"| {r['layer']} | {r['cycles']} | {r['model']} | {r['utilisation']:.3f} | "
                 f"{r['load_cycles']} | {r['stall_cycles']} |")
    for s, summ in res["network"].items():
        L += ["", f"## Embedded-default network on {s}", "",
              f"Wall time of `sluice run-model`: {summ['wall_s']:.0f} s (build "
              f"{summ['build_s']:.0f} s). Bit-exact: {summ['bit_exact']}.", "",
              (out / f"network_{s}" / "layers.md").read_text()]
    for s, summ in res.get("network_ordered", {}).items():
        L += ["", f"## Embedded-default network on {s}, host column order", "",
              f"The same image and RTL, the gated layers' channels on the columns in the order "
              f"`sluice column-order` fits to the {summ['column_order']['calibration']} "
              f"(into a copy of the export, {summ['fit_s']:.0f} s; what `make demo` runs). "
              f"Wall time of `sluice run-model`: {summ['wall_s']:.0f} s. Bit-exact: "
              f"{summ['bit_exact']}. "
              f"Network: speedup {summ['speedup']:.2f}x, efficiency {summ['efficiency']:.3f}.",
              "", (out / f"network_{s}_ordered" / "layers.md").read_text()]
    for s, summ in res.get("network_stacked", {}).items():
        alone = next((r for r in res.get("levers", []) if r.get("order") == "host column order"
                      and r["images"] == summ["images"]
                      and [r["rows"], r["cols"]] == list(res["array"])), None)
        vs = (f" The same images each alone (cycle model, step 5): "
              f"{alone['alone'] / alone['images']:,.0f} gated cycles per image, efficiency "
              f"{alone['efficiency_alone']:.3f}." if alone else "")
        L += ["", f"## Throughput mode on {s}: {summ['images']} images stacked", "",
              f"`sluice run-model EXPORT-ORDERED --images {summ['images']}`: the sample image "
              f"and the {summ['images'] - 1} after it stacked along the height of every map, "
              f"the jobs skipping the rows between them. Wall time: {summ['wall_s']:.0f} s. "
              f"Bit-exact: {summ['bit_exact']}; {summ.get('correct')} of {summ['images']} "
              f"classified correctly. Per image {summ['cycles_gated_per_image']:,.0f} gated "
              f"and {summ['cycles_dense_per_image']:,.0f} dense cycles; speedup "
              f"{summ['speedup']:.2f}x, efficiency {summ['efficiency']:.3f}.{vs}", "",
              (out / f"network_{s}_stacked" / "layers.md").read_text()]
    small = res.get("network_small", [])
    if small:
        L += ["", "## Smaller arrays on the RTL", "",
              "The arrays at which the cycle model (next section) puts the embedded network's "
              "efficiency at issue 4's 0.90 or more, run on the RTL like the default instance "
              "above (`sluice run-model EXPORT --rows R --cols C --skip-cols S [--images N]`; "
              "the column order, where fitted, by `sluice column-order EXPORT --rows R --cols C "
              "--skip-cols S -o DIR` for that instance; `run-model s` includes building the "
              "simulation). Smaller arrays lose fewer cycles to skip groups in lockstep and to "
              "partly filled passes (the next section's columns), and do fewer dense-equivalent "
              "MACs per cycle (its `MACs/cycle`).", "",
              "| array | skip_cols | column order | images | fit s | run-model s | dense cycles | "
              "gated cycles | speedup | reduction | efficiency | bit-exact |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in small:
            L.append(f"| {r['rows']}x{r['cols']} | {r['skip_cols']} | "
                     f"{'fitted' if r['ordered'] else 'as exported'} | {r['images']} | "
                     f"{r['fit_s']:.0f} | {r['wall_s']:.0f} | {r['cycles_dense']} | "
                     f"{r['cycles_gated']} | {r['speedup']:.2f} | {r['reduction']:.2f} | "
                     f"{r['efficiency']:.3f} | {r['bit_exact']} |")
    L += ["", "## The network on other array shapes (cycle model)", "",
          "The embedded default's sample image, every layer predicted by the cycle model (exact "
          "against the RTL on the default instance above). `MACs/cycle` is the dense network's "
          "MACs over the gated run's cycles: throughput; efficiency = speedup / reduction. The "
          "last four columns: the gated cycles lost to skip tiles, partly filled last passes, "
          "skip groups in lockstep, and stalls and loads (`loss_breakdown`). `--board` rows: "
          "board builds as built (`sluice build --board NAME OPTIONS`: the board's buffer "
          "depths and stream width; the ULX3S 85F's default 4 x 4, its 8 x 8 that meets "
          "100 MHz and its 4 x 4 with one-column groups and 16 KiB copies, "
          "`boards/README.md`).", "",
          "| array | skip_cols | dense cycles | gated cycles | speedup | efficiency | "
          "MACs/cycle | skip_tile | partial passes | lockstep | overhead |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["shapes"]:
        opts = _suffix(r)
        L.append(f"| {r['rows']}x{r['cols']}{opts} | {r['skip_cols']} | {r['cycles_dense']} | "
                 f"{r['cycles_gated']} | {r['speedup']:.2f} | {r['efficiency']:.3f} | "
                 f"{r['macs_per_cycle']:.1f} | {100 * r['skip_tile']:.1f}% | "
                 f"{100 * r['partial_pass']:.1f}% | {100 * r['lockstep']:.1f}% | "
                 f"{100 * r['overhead']:.1f}% |")
    L += ["", "## Efficiency levers (cycle model)", "",
          "`python -m sluice.hw.levers` (see `hw/README.md`): images stacked along the height "
          "of every map (the throughput mode of `sluice run-model EXPORT --images N`, built), "
          "and estimates for skip groups that advance independently "
          "across channel tiles, for skip groups that take whole passes of each other's lists "
          "within a tile (shared passes), and for a tile's last conditional pass split over "
          "up to four row slices by input channels (a quarter of its steps; the RTL builds "
          "two, half its steps, and on 3 x 3 layers three kernel-row slices, a third), and "
          "for skip groups that each run their own tile sequence behind the loader's two "
          "weight banks (decoupled groups); none of them built. Stacked, the jobs skip the "
          "rows between the images (both runs); the last two columns are the same images "
          "each run alone (the one-image row is the first image's alone).", "",
          "| array | skip_cols | order | images | dense cycles | gated cycles | gated cycles per "
          "image | efficiency | independent groups (estimate) | shared passes (estimate) | four "
          "channel slices (estimate) | decoupled groups (estimate) | each alone: gated cycles "
          "per image | efficiency |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("levers", []):
        L.append(f"| {r['rows']}x{r['cols']} | {r['skip_cols']} | {r.get('order', '')} | "
                 f"{r['images']} | "
                 f"{r['dense']} | {r['lockstep']} | {r['lockstep'] / r['images']:.0f} | "
                 f"{r['efficiency_lockstep']:.3f} | {r['efficiency_independent']:.3f} | "
                 f"{r['efficiency_shared']:.3f} | {r['efficiency_sliced']:.3f} | "
                 f"{r['efficiency_decoupled']:.3f} | {r['alone'] / r['images']:.0f} | "
                 f"{r['efficiency_alone']:.3f} |")
    (out / "report.md").write_text("\n".join(L) + "\n")


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="the README's measurements (long)",
                       description="Measure simulator speed, dense utilisation and the "
                                   "embedded network's speedup and efficiency on the RTL.")
    p.add_argument("-o", "--out", default="build/bench")
    p.add_argument("--sims", default="icarus,verilator", help="simulators to measure")
    p.add_argument("--network-all", action="store_true",
                   help="run the whole network on every simulator (Icarus takes long), not "
                        "only the fastest")
    p.set_defaults(func=cmd_bench)
