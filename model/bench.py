"""Model benchmark: the issue's targets on the full test set, measured, not assumed.

    python -m sluice.model.bench --dense DENSE.pt --gated GATED.pt [-o eval]
    python -m sluice.model.bench --dense-report DENSE.eval.json --gated GATED.pt [-o eval]

Evaluates the dense baseline (float), the gated network (float and int8), checks the targets
(dense >= 93.5 %; gated int8 >= 3.0x MAC reduction and at most 0.5 points below dense; int8
within 0.2 points of float) and writes ``targets.json`` plus the usual eval reports and plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    import torch
    from .checkpoint import atomic_write_bytes
    from .evaluate import _run_name, evaluate_checkpoint, plot_gate_rates, plot_tradeoff

    ap = argparse.ArgumentParser(prog="python -m sluice.model.bench")
    dense = ap.add_mutually_exclusive_group(required=True)
    dense.add_argument("--dense", help="the dense baseline checkpoint (evaluated in float)")
    dense.add_argument("--dense-report", metavar="EVAL_JSON",
                       help="an earlier float eval report of the dense baseline instead (its "
                            "checkpoint need not exist any more); the same test set is checked")
    ap.add_argument("--gated", required=True)
    ap.add_argument("-o", "--out", default="eval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--also", nargs="*", default=[], metavar="CKPT",
                    help="more gated checkpoints (float and int8) for the accuracy/reduction "
                         "plot, e.g. other p or gate targets")
    ap.add_argument("--also-reports", nargs="*", default=[], metavar="EVAL_JSON",
                    help="earlier eval reports (*.eval.json) to add to the plot as they are")
    args = ap.parse_args(argv)

    def read_report(option, path):
        try:
            r = json.loads(Path(path).read_text())
            missing = {"checkpoint", "int8", "reduction", "top1", "images"} - set(r)
            if missing:
                raise ValueError(f"not an eval report (no {', '.join(sorted(missing))})")
            if option == "--dense-report" and r["int8"]:
                raise ValueError("an int8 report; the dense baseline is measured in float")
        except (OSError, ValueError, TypeError) as e:
            print(f"python -m sluice.model.bench: error: {option} {path}: {e}", file=sys.stderr)
            return None
        return r

    earlier = []  # checked before the long evaluations
    for path in args.also_reports:
        r = read_report("--also-reports", path)
        if r is None:
            return 2
        earlier.append(r)
    dense_report = None
    if args.dense_report:
        dense_report = read_report("--dense-report", args.dense_report)
        if dense_report is None:
            return 2
        if args.limit and args.limit < dense_report["images"]:  # the common mismatch, early
            print(f"python -m sluice.model.bench: error: --dense-report {args.dense_report}: "
                  f"measured on {dense_report['images']} images, --limit {args.limit} would "
                  f"measure the gated network on fewer", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    reports = {}
    runs = [("gated", args.gated, False), ("gated_int8", args.gated, True)]
    if dense_report is None:
        runs.insert(0, ("dense", args.dense, False))
    else:
        reports["dense"] = dense_report
    runs += [(f"{ck}{' int8' if int8 else ''}", ck, int8) for ck in args.also
             for int8 in (False, True)]
    for key, ck, int8 in runs:
        r = evaluate_checkpoint(ck, int8=int8, limit=args.limit)
        stem = _run_name(ck) + (".int8" if int8 else "")
        atomic_write_bytes(out / f"{stem}.eval.json",
                           lambda f: f.write(json.dumps(r, indent=1).encode()))
        plot_gate_rates(r, out / f"{stem}.gates.png")
        reports[key] = r
        rate = "-" if r["gate_rate"] is None else f"{100 * r['gate_rate']:.2f}%"
        tag = Path(ck).parent.name + (" int8" if int8 else "")
        print(f"{tag:11s} top-1 {100 * r['top1']:.2f}%  reduction {r['reduction']:.3f}x  "
              f"gates on {rate}", flush=True)
    plot_tradeoff(list(reports.values()) + earlier, out / "accuracy_vs_reduction.png")
    if reports["dense"]["images"] != reports["gated"]["images"]:
        print(f"python -m sluice.model.bench: error: --dense-report {args.dense_report}: "
              f"measured on {reports['dense']['images']} images, the gated network on "
              f"{reports['gated']['images']}", file=sys.stderr)
        return 2
    d, g, q = (reports[k]["top1"] * 100 for k in ("dense", "gated", "gated_int8"))
    targets = {
        "dense_top1": d, "gated_float_top1": g, "gated_int8_top1": q,
        "gated_int8_reduction": reports["gated_int8"]["reduction"],
        "gated_int8_gate_rate": reports["gated_int8"]["gate_rate"],
        "checks": {
            "dense >= 93.5": d >= 93.5,
            "gated int8 reduction >= 3.0x": reports["gated_int8"]["reduction"] >= 3.0,
            "gated int8 >= dense - 0.5": q >= d - 0.5,
            "|int8 - float| <= 0.2": abs(q - g) <= 0.2,
        },
        "images": reports["dense"]["images"],
        "dense": args.dense or dense_report["checkpoint"], "gated": args.gated,
    }
    atomic_write_bytes(out / "targets.json",
                       lambda f: f.write(json.dumps(targets, indent=1).encode()))
    for k, v in targets["checks"].items():
        print(f"{'PASS' if v else 'MISS'}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
