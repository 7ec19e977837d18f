"""``sluice demo``: the main job, end to end, with progress.

Each step says what it does; a step whose part of Sluice is not built yet says so and is skipped
(never faked). Any mismatch makes the demo exit non-zero.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from sluice.errors import SluiceError


class Skip(Exception):
    """A step cannot run because its part of Sluice is not in this build."""


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return False
        raise
    return True


class Demo:
    def __init__(self, out: Path, rows: int, cols: int):
        self.out, self.rows, self.cols = out, rows, cols
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.report: list[str] = ["# Sluice demo report", ""]

    def run(self, steps) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        t_all = time.monotonic()
        for n, (title, fn) in enumerate(steps, 1):
            print(f"[{n}/{len(steps)}] {title} ...", flush=True)
            t0 = time.monotonic()
            try:
                fn()
                print(f"      done in {time.monotonic() - t0:.1f} s", flush=True)
            except Skip as e:
                self.skipped.append(title)
                print(f"      skipped: {e}", flush=True)
                self.report += [f"- {title}: skipped ({e})"]
        report = self.out / "report.md"
        tmp = report.with_suffix(".md.tmp")
        tmp.write_text("\n".join(self.report) + "\n")
        tmp.replace(report)
        total = time.monotonic() - t_all
        if self.failed:
            print(f"demo FAILED after {total:.0f} s: {'; '.join(self.failed)}")
            return 1
        print(f"demo finished in {total:.0f} s ({len(self.skipped)} steps skipped); "
              f"report: {report}")
        return 0

    # --- steps ------------------------------------------------------------------------------

    def reference_layer(self):
        from sluice.model.layerfile import read_layer, write_layer
        from sluice.model.randlayer import make_layer
        from sluice.model.reference import run_reference, work_figures

        path = self.out / "random.layer.npz"
        write_layer(path, make_layer(c_in=16, c_out=16, size=(8, 8), partitions=4,
                                     gate_rate=0.25, residual=True, seed=7, name="demo.random"))
        layer = read_layer(path)
        y, gate = run_reference(layer)
        ok = (y == layer.y_ref).all() and (gate == layer.gate_ref).all()
        fig = work_figures(layer, gate, self.rows, self.cols)
        line = (f"random 16->16 channel 3x3 layer, p=4: gate rate {fig['gate_rate']:.3f}, "
                f"MAC reduction {fig['reduction']:.2f}x, reference "
                f"{'matches' if ok else 'DOES NOT match'} the stored y_ref/gate_ref")
        print("      " + line)
        self.report += [f"- {line}"]
        if not ok:
            self.failed.append("integer reference")

    def model_eval(self):
        if not _have("sluice.model.demo_steps"):
            raise Skip("the trained model and exporter are not built yet (issue 3)")
        importlib.import_module("sluice.model.demo_steps").run(self)

    def hardware(self):
        if not _have("sluice.hw.demo_steps"):
            raise Skip("the Verilog generator is not built yet (issue 4)")
        importlib.import_module("sluice.hw.demo_steps").run(self)

    def rtl_network(self):
        if not _have("sluice.sim.demo_steps"):
            raise Skip("the cocotb RTL runner is not built yet (issue 5)")
        importlib.import_module("sluice.sim.demo_steps").run(self)


def cmd_demo(args) -> int:
    if args.rows < 2 or args.cols < 2:
        raise SluiceError("--rows/--cols: the array is at least 2x2")
    demo = Demo(Path(args.out), args.rows, args.cols)
    return demo.run([
        ("integer reference on a random gated layer", demo.reference_layer),
        ("evaluate and export the embedded-default model", demo.model_eval),
        ("generate and lint the Verilog", demo.hardware),
        ("run the network on the RTL, bit for bit", demo.rtl_network),
    ])


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end (what `make demo` runs)",
                       description="Run Sluice end to end on the embedded default and write a "
                                   "report into --out.")
    p.add_argument("--out", default="build/demo", help="report folder (default build/demo)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=8)
    p.set_defaults(func=cmd_demo)
