"""Narrow gated networks (one channel per base group) train on the CPU.

torch 2.13's CPU grouped convolution with one channel per group crashes in channels_last;
`sluice train` must fall back to NCHW rather than die. Run in a subprocess: a segfault must
fail the test, not the pytest worker."""

import subprocess
import sys


def test_width4_p4_trains_without_crash(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "train", "--dataset", "synthetic", "--width", "4",
         "--partitions", "4", "--epochs", "1", "--limit-train", "64", "--batch-size", "32",
         "--threads", "1", "-o", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:]
    assert "NCHW" in proc.stdout
    assert (tmp_path / "run" / "model.pt").exists()
