"""The emitted Verilog: deterministic, parameter header, lint-clean; the committed register map
document is current."""

import os
import shutil
import subprocess
import sys

import pytest

from sluice.errors import SluiceError
from sluice.hw.params import DEFAULT, HwParams, regmap_markdown
from sluice.hw.verilog import verilog_text

SMALL = HwParams(rows=2, cols=4, act_depth=256, wgt_depth=64, pix_depth=16, skip_cols=2)
HW_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "hw")


@pytest.fixture(scope="module")
def small_verilog():
    return verilog_text(SMALL)


def test_verilog_is_deterministic(small_verilog):
    assert verilog_text(SMALL) == small_verilog
    assert "//   rows = 2" in small_verilog and "//   cols = 4" in small_verilog
    assert "//   sum_bits = 21 (" in small_verilog  # wgt_depth 64
    assert "module sluice_top(" in small_verilog
    assert small_verilog.count("\nmodule ") == 1 or "endmodule" in small_verilog
    assert "src =" not in small_verilog  # no source paths: byte-identical across checkouts


def test_verilog_is_identical_across_processes(small_verilog):
    """Byte-identical in other Python processes too, whose string hashes (and so the order of a
    set of names) differ: the over-flag logic once iterated a set and emitted its assignments
    in a different order per process."""
    code = ("import sys; from sluice.hw.verilog import verilog_text; "
            "from sluice.hw.params import HwParams; sys.stdout.write(verilog_text(HwParams("
            "rows=2, cols=4, act_depth=256, wgt_depth=64, pix_depth=16, skip_cols=2)))")
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out == small_verilog, seed


def test_comb_processes_run_at_time_zero(small_verilog):
    """Every module's always @* trigger register toggles at time 0 (IEEE 1800 simulators do not
    treat its declaration initialiser as an event; see sluice.hw.verilog)."""
    modules = small_verilog.count("\nmodule ")
    kicks = small_verilog.count("initial #0 \\$auto$verilog_backend")
    assert kicks == small_verilog.count(":dump_module$") - small_verilog.count(
        "if (\\$auto$verilog_backend") - kicks
    assert 0 < kicks <= modules


def test_verilog_differs_with_parameters(small_verilog):
    other = verilog_text(HwParams(rows=3, cols=4, act_depth=256, wgt_depth=64, pix_depth=16))
    assert other != small_verilog


def test_cli_writes_verilog(tmp_path):
    from sluice.cli import main
    out = tmp_path / "a.v"
    assert main(["verilog", "-o", str(out), "--rows", "2", "--cols", "4", "--act-depth", "256",
                 "--wgt-depth", "64", "--pix-depth", "16"]) == 0
    assert out.read_text() == verilog_text(SMALL)
    assert main(["verilog", "-o", str(tmp_path / "b.v"), "--rows", "1"]) == 2
    assert main(["verilog", "-o", str(tmp_path / "b.txt")]) == 2
    assert main(["verilog", "-o", str(tmp_path / "c.v"), "--pix-depth", str(1 << 17)]) == 2
    assert not (tmp_path / "c.v").exists()


def test_logic_multipliers_leave_the_elements_without_a_multiply(small_verilog, tmp_path):
    """``--pe-mult logic``: one multiply fewer per element (the post-processing's and the
    descriptor's remain), named in the header; a bad choice is a clear error."""
    import re

    from sluice.cli import main
    from sluice.errors import SluiceError

    out = tmp_path / "l.v"
    assert main(["verilog", "-o", str(out), "--rows", "2", "--cols", "4", "--act-depth", "256",
                 "--wgt-depth", "64", "--pix-depth", "16", "--pe-mult", "logic"]) == 0
    logic = out.read_text()
    assert "//   pe_mult = logic" in logic and "//   pe_mult = dsp" in small_verilog
    n_mul = [len(re.findall(r" \* ", v)) for v in (small_verilog, logic)]
    assert n_mul[0] - n_mul[1] == SMALL.rows * SMALL.cols
    with pytest.raises(SluiceError, match="--pe-mult: 'booth' is not one of dsp, logic"):
        HwParams(pe_mult="booth")
    if shutil.which("verilator"):
        from sluice.hw.commands import run_lint
        proc = run_lint(str(out))
        assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]


def test_pix_depth_must_fit_the_result_pixel_field():
    from sluice.errors import SluiceError
    from sluice.hw.params import PIX_BITS
    HwParams(pix_depth=1 << PIX_BITS)
    with pytest.raises(SluiceError, match="--pix-depth"):
        HwParams(pix_depth=1 << (PIX_BITS + 1))


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
def test_verilator_lint_clean(small_verilog, tmp_path):
    from sluice.hw.commands import run_lint
    path = tmp_path / "sluice.v"
    path.write_text(small_verilog)
    proc = run_lint(str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog is not installed")
def test_icarus_parses(small_verilog, tmp_path):
    path = tmp_path / "sluice.v"
    path.write_text(small_verilog)
    proc = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_regmap_doc_is_current():
    with open(os.path.join(HW_DIR, "REGMAP.md")) as f:
        assert f.read() == regmap_markdown(DEFAULT), "run: sluice regmap -o hw/REGMAP.md"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
def test_default_instance_lint_clean(tmp_path):
    from sluice.hw.commands import run_lint
    path = tmp_path / "sluice.v"
    path.write_text(verilog_text(DEFAULT))
    proc = run_lint(str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cli_regmap_and_cycles(tmp_path, capsys):
    from sluice.cli import main
    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer
    out = tmp_path / "regmap.md"
    assert main(["regmap", "-o", str(out)]) == 0
    assert out.read_text() == regmap_markdown(DEFAULT)
    layer_path = tmp_path / "l.layer.npz"
    write_layer(str(layer_path), make_layer(c_in=8, c_out=8, size=(6, 6), partitions=4, seed=1))
    assert main(["cycles", str(layer_path)]) == 0
    text = capsys.readouterr().out
    assert "bound_cycles" in text and "efficiency" in text
    assert main(["cycles", str(layer_path), "--skip-cols", "3"]) == 2
    # one post-processing unit for the 8 columns: the drain takes 8 cycles per row
    assert main(["cycles", str(layer_path), "--post-cols", "3"]) == 2
    assert "--post-cols: 3 must divide --cols 8" in capsys.readouterr().err
    assert main(["cycles", str(layer_path), "--post-cols", "8"]) == 0
    shared = capsys.readouterr().out
    assert "bound_cycles" in shared and shared != text


def test_cli_act_share_and_width(tmp_path, capsys):
    """--act-share / --act-width: bad values exit 2 naming the option; good ones change the
    predicted cycles (the shared copies' passes wait for the whole activation block)."""
    from sluice.cli import main
    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer
    layer_path = tmp_path / "l.layer.npz"
    write_layer(str(layer_path), make_layer(c_in=16, c_out=8, size=(8, 8), partitions=4,
                                            seed=2))
    for opt, val, msg in (("--act-share", "3", "--act-share: 3 must be 1 or 2"),
                          ("--act-width", "3", "--act-width: 3 must be a power of two"),
                          ("--act-width", "32", "--act-width: 32 must be a power of two up to "
                                                "the stream width (16 bytes)")):
        assert main(["cycles", str(layer_path), opt, val]) == 2
        assert msg in capsys.readouterr().err
    cyc = {}
    for args in ([], ["--act-share", "2"], ["--act-width", "1"]):
        assert main(["cycles", str(layer_path), *args]) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if "cycles" in ln][0]
        cyc[tuple(args)] = line
    assert len(set(cyc.values())) == 3, cyc
    with pytest.raises(SluiceError, match="--act-width"):
        HwParams(act_width=64)
    assert HwParams(act_share=2).act_copies == 16  # 8 rows x 4 skip groups / 2
    # shared copies take two words a cycle while the activations load (both ports free)
    assert HwParams(act_width=2).act_pieces == 8 and HwParams(act_width=2).act_write_ports == 1
    assert HwParams(act_share=2, act_width=2).act_pieces == 4
    assert HwParams(act_share=2).act_pieces == 1 and HwParams(act_share=2).act_write_ports == 1
    assert HwParams(act_share=2, gating=False, act_width=2).act_write_ports == 1
    assert HwParams(act_share=2, gating=False).act_copies == 8 and \
        not HwParams(act_share=2, gating=False).act_shared


def test_cli_feed_regs(tmp_path, capsys):
    """--feed-regs: a bad value exits 2 naming the option; 2 is named in the Verilog header,
    adds the registers (lint-clean) and a cycle per phase to the predicted count."""
    from sluice.cli import main
    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer
    layer_path = tmp_path / "l.layer.npz"
    write_layer(str(layer_path), make_layer(c_in=16, c_out=8, size=(8, 8), partitions=4,
                                            seed=2))
    for args in (["cycles", str(layer_path)], ["verilog", "-o", str(tmp_path / "x.v")]):
        assert main(args + ["--feed-regs", "3"]) == 2
        assert "--feed-regs: 3 must be 1 or 2" in capsys.readouterr().err
    assert not (tmp_path / "x.v").exists()
    cyc = []
    for n in ("1", "2"):
        assert main(["cycles", str(layer_path), "--feed-regs", n]) == 0
        cyc.append([ln for ln in capsys.readouterr().out.splitlines() if "cycles" in ln][0])
    assert cyc[0] != cyc[1]
    assert HwParams(feed_regs=2).array_extra == HwParams().array_extra + 1
    assert HwParams(feed_regs=2).summary() == "8x8, skip_cols 2, feed_regs 2"
    texts = {}
    for n in ("1", "2"):
        out = tmp_path / f"f{n}.v"
        assert main(["verilog", "-o", str(out), "--rows", "2", "--cols", "4", "--act-depth",
                     "256", "--wgt-depth", "64", "--pix-depth", "16", "--feed-regs", n]) == 0
        texts[n] = out.read_text()
    assert "//   feed_regs = 2" in texts["2"] and "//   feed_regs = 1" in texts["1"]
    # one more register per activation feed (4 slots) and per weight column (4), at least
    assert texts["2"].count("reg ") >= texts["1"].count("reg ") + 8
    if shutil.which("verilator"):
        from sluice.hw.commands import run_lint
        proc = run_lint(str(tmp_path / "f2.v"))
        assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]


def test_shared_narrow_copies_verilog(tmp_path):
    """Shared 2-byte activation copies: named in the header, half the read-port memories
    (two read ports each), lint-clean."""
    import re

    from sluice.cli import main
    out = tmp_path / "s.v"
    args = ["verilog", "-o", str(out), "--rows", "2", "--cols", "4", "--act-depth", "256",
            "--wgt-depth", "64", "--pix-depth", "16"]
    assert main(args + ["--act-share", "2", "--act-width", "2"]) == 0
    text = out.read_text()
    assert "//   act_share = 2" in text and "//   act_width = 2" in text
    # 2 rows x 2 skip groups: two copies of 128 x 16 bits (one per row) instead of four
    assert len(re.findall(r"reg \[15:0\] act_buf_\d+ \[127:0\]", text)) == 2, \
        re.findall(r"reg \[\d+:0\] act_buf_\w+ \[\d+:0\]", text)
    if shutil.which("verilator"):
        from sluice.hw.commands import run_lint
        proc = run_lint(str(out))
        assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]
