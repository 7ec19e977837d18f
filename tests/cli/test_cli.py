"""The `sluice` command line as a user meets it."""

import argparse
import subprocess
import sys

import pytest

from sluice.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


def test_core_subcommands_present():
    assert {"run-layer", "make-layer", "info", "demo"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: sluice " + command in capsys.readouterr().out


def test_top_level_help_is_fast_and_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "sluice.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "run-layer" in proc.stdout
    # heavy frameworks are imported by the handlers that need them, not by --help
    proc = subprocess.run([sys.executable, "-c", "import sys; import sluice.cli as c; "
                           "c.build_parser(); print(sorted(m for m in ('torch', 'amaranth', "
                           "'cocotb') if m in sys.modules))"], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_rtl_sim_unavailable_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "sluice.sim.runner":
            raise ModuleNotFoundError(name=name)
        return real(name, *a, **k)

    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer
    write_layer(tmp_path / "l.layer.npz", make_layer(seed=1))
    monkeypatch.setattr(importlib, "import_module", fake)
    status = main(["run-layer", str(tmp_path / "l.layer.npz"), "-o",
                   str(tmp_path / "o.result.npz"), "--sim", "icarus"])
    assert status == 2
    assert "--sim icarus" in capsys.readouterr().err
    assert not (tmp_path / "o.result.npz").exists()


def test_demo_train_replays_the_recorded_commands(tmp_path):
    """`sluice demo --train` turns the checkpoint's training record into valid commands whose
    outputs land in the demo folder and chain (the gated run starts from the dense one)."""
    import json

    from sluice.demo import train_commands
    from sluice.model.checkpoint import DEFAULT_CHECKPOINT

    record = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    commands = train_commands(record, tmp_path / "train")
    assert commands and all(argv[0] == "train" for argv in commands)
    parser = build_parser()
    outs = []
    chained = 0
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.batch_size == 128 and str(tmp_path) in args.out
        # every checkpoint a command starts from or distils from is an earlier command's output
        for used in (args.init_from, args.teacher):
            if used:
                assert used in [f"{o}/model.pt" for o in outs], (argv, used)
                chained += 1
        outs.append(args.out)
    assert chained and args.init_from  # the last command starts from an earlier output


def test_closed_output_pipe_is_a_quiet_exit(tmp_path):
    """`sluice ... | head -1`: once the reader is gone the command stops with status 141 and no
    traceback."""
    import os
    import subprocess
    import sys

    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer

    lpath = tmp_path / "l.layer.npz"
    write_layer(str(lpath), make_layer(c_in=4, c_out=4, size=(4, 4), partitions=2, seed=1))
    r, w = os.pipe()
    os.close(r)  # the reader has gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "sluice.cli", "cycles", str(lpath),
                               "--rows", "4", "--cols", "4"], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_params_summary_names_what_differs():
    from sluice.hw.params import HwParams

    assert HwParams().summary() == "8x8, skip_cols 2"
    assert HwParams(rows=4, post_cols=4, act_share=2).summary() == \
        "4x8, skip_cols 2, post_cols 4, act_share 2"
    assert HwParams(gating=False, act_width=4).summary() == "8x8 dense-only, act_width 4"
    assert HwParams(row_slices=1).summary() == "8x8, skip_cols 2, row_slices 1"
    # a dense-only build has no conditional passes to slice: the option is moot, not named
    assert HwParams(gating=False, row_slices=1).summary() == "8x8 dense-only"
    assert HwParams(stacking=0).summary() == "8x8, skip_cols 2, stacking False"


def test_stacking_option(tmp_path, capsys):
    """`--stacking 0|1` (the walker's jump over the rows between stacked images), and
    `cycles --stacked`, which needs an export folder."""
    from sluice.model.layerfile import write_layer
    from sluice.model.randlayer import make_layer

    assert main(["verilog", "-o", str(tmp_path / "a.v"), "--rows", "2", "--cols", "2",
                 "--stacking", "2"]) == 2
    assert "--stacking: 2 must be 0 or 1" in capsys.readouterr().err
    path = tmp_path / "l.layer.npz"
    write_layer(path, make_layer(c_in=4, c_out=4, size=(4, 4), partitions=2, seed=1))
    assert main(["cycles", str(path), "--stacked"]) == 2
    assert "--images/--stacked: apply to an export folder" in capsys.readouterr().err
    # a build report's command line gives the flag as the option takes it, 0 or 1, and the
    # help states its default so
    import argparse

    from sluice.hw.commands import add_params, option_args, params_from_args
    from sluice.hw.params import HwParams
    assert option_args({"stacking": False, "rows": 4}) == ["--stacking", "0", "--rows", "4"]
    p = argparse.ArgumentParser()
    add_params(p)
    for on in (False, True):
        want = HwParams(rows=4, stacking=on)
        assert params_from_args(p.parse_args(option_args(
            {"rows": 4, "stacking": want.stacking}))) == want
    assert "default 1" in next(a.help for a in p._actions if a.dest == "stacking")


def test_board_option_starts_from_the_board_build(capsys):
    """`--board NAME` on the generator's commands: the instance `sluice build --board NAME`
    makes (its depths and stream width), the other options on top; without it the default
    instance, and `--dense-only` either way."""
    import argparse

    from sluice.boards.platforms import ULX3S_85F_8X8, get_board
    from sluice.hw.commands import add_params, params_from_args
    from sluice.hw.params import HwParams

    p = argparse.ArgumentParser()
    add_params(p)
    board = get_board("ulx3s-85f")
    assert params_from_args(p.parse_args([])) == HwParams()
    assert params_from_args(p.parse_args(["--rows", "4", "--act-depth", "4096"])) == \
        HwParams(rows=4, act_depth=4096)
    assert params_from_args(p.parse_args(["--board", "ulx3s-85f"])) == board.params()
    from sluice.hw.commands import option_args
    argv = ["--board", "ulx3s-85f"] + option_args(ULX3S_85F_8X8)
    at = params_from_args(p.parse_args(argv))
    assert at == board.params(**ULX3S_85F_8X8)
    assert (at.act_depth, at.wgt_depth, at.stream_width) == (board.act_depth, board.wgt_depth, 8)
    assert params_from_args(p.parse_args(argv + ["--wgt-depth", "4096", "--dense-only"])) == \
        HwParams(**{**at.as_dict(), "wgt_depth": 4096, "gating": False})
    # an unknown board: one line naming it, exit status 2
    from sluice.cli import main

    assert main(["regmap", "--board", "nope"]) == 2
    assert "--board: unknown board 'nope'" in capsys.readouterr().err


def test_board_option_follows_the_boards_default_build(capsys):
    """On a board whose default build is dense-only (the iCEBreaker) `--board` starts from that
    build, as `sluice build --board NAME` does; `--gated` names the gated one, and
    `--gated --dense-only` is refused in one line."""
    import argparse

    from sluice.boards.platforms import get_board
    from sluice.hw.commands import add_params, params_from_args
    from sluice.cli import main

    p = argparse.ArgumentParser()
    add_params(p)
    board = get_board("icebreaker")
    assert not board.gated
    dense = params_from_args(p.parse_args(["--board", "icebreaker"]))
    assert not dense.gating and (dense.rows, dense.cols) == (board.rows, board.cols)
    gated = params_from_args(p.parse_args(["--board", "icebreaker", "--gated"]))
    assert gated == board.params() and gated.gating
    assert params_from_args(p.parse_args(["--board", "ulx3s-85f"])).gating
    assert main(["regmap", "--board", "icebreaker", "--gated", "--dense-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--dense-only and --gated: pick one" in err


def test_instance_options_have_one_definition():
    """Every HwParams field but ``gating`` is an option of the generator's commands, and the
    board commands take the same options (but the stream width, which a board build sets) with
    the same help text, only the default named differently."""
    import argparse
    import dataclasses

    from sluice.boards.commands import BOARD_OPTIONS, _add_board_args
    from sluice.hw.commands import PARAM_OPTIONS, add_params
    from sluice.hw.params import HwParams

    assert set(PARAM_OPTIONS) == {f.name for f in dataclasses.fields(HwParams)} - {"gating"}
    gen, board = argparse.ArgumentParser(), argparse.ArgumentParser()
    add_params(gen)
    _add_board_args(board)
    helps = [{a.dest: a.help for a in q._actions} for q in (gen, board)]
    for field in PARAM_OPTIONS:
        assert helps[0][field].startswith(PARAM_OPTIONS[field] + "; default ")
        if field in BOARD_OPTIONS:
            assert helps[1][field] == PARAM_OPTIONS[field] + "; default the board's"
    assert "stream_width" not in helps[1]
    # the board commands pass every one of them on: --pe-mult reaches the instance planned for
    args = board.parse_args(["--board", "ulx3s-85f", "--pe-mult", "logic", "--rows", "4"])
    from sluice.boards.commands import _board_params
    _, params = _board_params(args)
    assert (params.pe_mult, params.rows) == ("logic", 4)


def test_row_slices_option_is_checked(tmp_path, capsys):
    assert main(["verilog", "--row-slices", "4", "-o", str(tmp_path / "x.v")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--row-slices: 4 must be 1, 2 or 3" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,name", [
    (["make-layer", "-o"], "out.layer.npz"),
    (["verilog", "--rows", "2", "--cols", "2", "-o"], "out.v")])
def test_unwritable_output_is_a_one_line_error(tmp_path, capsys, command, name):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # a file where the output's folder must be: exit 2, one line naming it, nothing written
    assert main(command + [str(blocker / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"{blocker}: exists and is not a folder" in err
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_atomic_write_names_the_target_when_it_cannot_start(tmp_path, monkeypatch):
    import errno
    import tempfile

    from sluice.fileio import atomic_write_text

    def refuse(**kw):  # what mkstemp raises in a folder the user may not write to
        raise PermissionError(errno.EACCES, "Permission denied", str(kw["dir"]) + "/.x.tmp")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "x.txt"
    with pytest.raises(PermissionError) as info:
        atomic_write_text(target, "x")
    assert info.value.filename == str(target) and info.value.errno == errno.EACCES
    assert not target.exists()
