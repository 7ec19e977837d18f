"""`sluice build --seed 2,3,4`: one synthesis, nextpnr with each seed until one meets timing.

The toolchain is replaced by stand-ins (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK`` point at a
script) that write what the real tools write, with each seed's Fmax taken from ``FAKE_FMAX``,
so the sweep's choices and files are checked in seconds; the real tools' logs are covered by
``test_report.py``.
"""

import json
import stat
import sys

import pytest

from sluice.boards import build as b
from sluice.errors import RunFailed, SluiceError

FAKE = r'''
import json, os, shutil, sys
tool, args = sys.argv[1], sys.argv[2:]
opt = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("-")}
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps([tool, opt.get("--seed")]) + "\n")
if tool == "yosys":
    open(opt["-l"], "w").write("")
    # a netlist with one block-RAM read port into a flip-flop (for sluice.boards.outreg)
    ram = {"type": "DP16KD", "parameters": {"DATA_WIDTH_A": "10010", "DATA_WIDTH_B": "10010",
           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"}, "port_directions": {"CLKB": "input",
           "DOB0": "output"}, "connections": {"CLKB": [2], "DOB0": [3], "RSTB": ["0"]}}
    ff = {"type": "TRELLIS_FF", "parameters": {"CEMUX": "1 "}, "port_directions": {
          "CLK": "input", "DI": "input", "Q": "output"}, "connections": {"CLK": [2], "DI": [3],
          "Q": [4]}}
    json.dump({"modules": {"top": {"ports": {}, "cells": {"ram": ram, "ff": ff},
                                   "netnames": {}}}}, open(opt["-l"][:-4] + ".json", "w"))
elif tool == "nextpnr":
    seed = opt["--seed"]
    cells = json.load(open(opt["--json"]))["modules"]["top"]["cells"]
    if "ff" in cells and os.environ.get("FAKE_OUTREG", "1") == "1":
        sys.exit("nextpnr: the flip-flop behind the block RAM was not moved")
    mhz = dict(x.split(":") for x in os.environ["FAKE_FMAX"].split(","))[seed]
    verdict = "PASS" if float(mhz) >= 100 else "FAIL"
    open(opt["--log"], "w").write(
        "Info: Device utilisation:\n"
        "Info: \t        TRELLIS_COMB:    1000/  83640     1%\n"
        "Info: \n"
        f"Info: Max frequency for clock '$glbnet$clk': {mhz} MHz ({verdict} at 100.00 MHz)\n")
    json.dump({"fmax": {}, "critical_paths": [], "detailed_net_timings": []},
              open(opt["--report"], "w"))
    open(opt["--textcfg"], "w").write(f"placed with seed {seed}\n")
elif tool == "ecppack":
    shutil.copy(opt["--input"], opt["--bit"])
'''


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    pytest.importorskip("amaranth_boards")
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    for var, tool in (("YOSYS", "yosys"), ("NEXTPNR_ECP5", "nextpnr"), ("ECPPACK", "ecppack")):
        exe = tmp_path / tool
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" {tool} "$@"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv(var, str(exe))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))

    def run(fmax, seed, outreg=False):
        monkeypatch.setenv("FAKE_FMAX", ",".join(f"{s}:{f}" for s, f in fmax.items()))
        monkeypatch.setenv("FAKE_OUTREG", "1" if outreg else "0")
        calls.write_text("")
        out = tmp_path / "out"
        try:
            report = b.build("ulx3s-85f", loopback=True, clock_mhz=100, seed=seed,
                             out_root=str(out), nice=0, outreg=outreg, log=lambda msg: None)
            err = None
        except RunFailed as e:
            report, err = None, e
        name = next(out.iterdir()).name
        tried = [json.loads(line) for line in calls.read_text().splitlines()]
        return report, err, out / name, name, tried

    return run


def test_sweep_stops_at_the_first_seed_that_meets_timing(fake_tools):
    report, err, d, name, tried = fake_tools({"2": "95.00", "3": "101.50", "4": "120.00"},
                                             "2,3,4")
    assert err is None and report["timing_met"]
    assert tried == [["yosys", None], ["nextpnr", "2"], ["nextpnr", "3"], ["ecppack", None]]
    assert (d / f"{name}.bit").read_text() == "placed with seed 3\n"
    assert report["fmax_mhz"] == 101.5 and "--seed 3" in report["command"]
    assert [(t["seed"], t["fmax_mhz"], t["timing_met"]) for t in report["seed_sweep"]] == \
        [(2, 95.0, False), (3, 101.5, True)]
    # seed 2's log is kept, its placement and timing report are not; no seed files left for 3
    left = sorted(p.name.replace(name, "NAME") for p in d.iterdir() if ".seed" in p.name)
    assert left == ["NAME.seed2.tim"]
    assert "## Seed sweep" in (d / f"{name}.report.md").read_text()
    saved = json.loads((d / f"{name}.report.json").read_text())
    assert saved["seed_sweep"] == report["seed_sweep"]


def test_sweep_without_a_met_seed_packs_the_best_and_fails_loudly(fake_tools):
    report, err, d, name, tried = fake_tools({"5": "91.00", "6": "98.80", "7": "94.00"}, [5, 6, 7])
    assert report is None and "timing not met" in str(err) and "98.8 MHz" in str(err)
    assert [t for t, _ in tried] == ["yosys", "nextpnr", "nextpnr", "nextpnr", "ecppack"]
    assert (d / f"{name}.bit").read_text() == "placed with seed 6\n"
    saved = json.loads((d / f"{name}.report.json").read_text())
    assert saved["fmax_mhz"] == 98.8 and "--seed 6" in saved["command"]
    assert [t["seed"] for t in saved["seed_sweep"]] == [5, 6, 7]
    assert not any(p.name.endswith((".config", ".timing.json")) and ".seed" in p.name
                   for p in d.iterdir())


def test_one_seed_runs_the_script_as_before(fake_tools):
    report, err, d, name, tried = fake_tools({"4": "101.00"}, 4)
    assert err is None and "seed_sweep" not in report and "--seed 4" in report["command"]
    assert [t for t, _ in tried] == ["yosys", "nextpnr", "ecppack"]
    # without --outreg nextpnr places the netlist as yosys wrote it
    assert "bram_outreg" not in report and "--outreg" not in report["command"]
    assert "sluice.boards.outreg" not in (d / f"build_{name}.sh").read_text()
    netlist = json.loads((d / f"{name}.json").read_text())["modules"]["top"]
    assert netlist["cells"]["ram"]["parameters"]["REGMODE_B"] == "NOREG"


def test_outreg_runs_the_pass_between_yosys_and_nextpnr(fake_tools):
    report, err, d, name, tried = fake_tools({"2": "101.00"}, 2, outreg=True)
    assert err is None and [t for t, _ in tried] == ["yosys", "nextpnr", "ecppack"]
    # (the script's own step: the script run by hand builds the same bitstream)
    assert "sluice.boards.outreg" in (d / f"build_{name}.sh").read_text()
    assert report["bram_outreg"] == {"ports": 1, "flip_flops": 1, "kept": 0}
    assert name.endswith("_100mhz_outreg") and "--outreg" in report["command"]
    netlist = json.loads((d / f"{name}.json").read_text())["modules"]["top"]
    assert "ff" not in netlist["cells"]
    assert netlist["cells"]["ram"]["parameters"]["REGMODE_B"] == "OUTREG"


def test_the_sweep_runs_the_output_register_pass_once_before_nextpnr(fake_tools):
    report, err, d, name, tried = fake_tools({"2": "99.00", "3": "101.00"}, "2,3", outreg=True)
    assert err is None and report["bram_outreg"]["flip_flops"] == 1
    assert [t for t, _ in tried] == ["yosys", "nextpnr", "nextpnr", "ecppack"]


@pytest.mark.parametrize("bad", ["2,x", "3,3", "-1", ""])
def test_bad_seed_lists_are_refused_before_the_tools(bad, monkeypatch):
    monkeypatch.setattr(b, "toolchain_env", lambda family: pytest.fail("got past the check"))
    with pytest.raises(SluiceError, match="--seed"):
        b.build("ulx3s-85f", seed=bad)
    with pytest.raises(SluiceError, match="--report-only reads one finished build"):
        b.build("ulx3s-85f", seed="2,3", report_only=True)


def test_bad_seed_list_exits_2_from_the_command_line(tmp_path, monkeypatch, capsys):
    from sluice.cli import main

    monkeypatch.setattr(b, "toolchain_env", lambda family: pytest.fail("got past the check"))
    out = tmp_path / "out"
    assert main(["build", "--board", "ulx3s-85f", "--seed", "2,,3", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0]
    assert not out.exists()  # refused before the build directory was made
