"""The model benchmark's argument checks (the benchmark itself is long and runs outside tests)."""

import json

import pytest

from sluice.model.bench import main


def test_bad_earlier_report_is_refused_before_any_evaluation(tmp_path, capsys):
    bad = tmp_path / "x.eval.json"
    bad.write_text(json.dumps({"top1": 0.9}))
    # the checkpoints do not exist: reaching the evaluation would fail differently
    assert main(["--dense", "nope.pt", "--gated", "nope.pt", "--also-reports", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--also-reports" in err and "x.eval.json" in err and "checkpoint" in err
    assert main(["--dense", "nope.pt", "--gated", "nope.pt", "--also-reports",
                 str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_dense_report_replaces_the_dense_checkpoint_and_is_checked_first(tmp_path, capsys):
    report = {"checkpoint": "runs/dense/model.pt", "int8": True, "reduction": 1.0,
              "top1": 0.94, "images": 10000}
    bad = tmp_path / "dense.int8.eval.json"
    bad.write_text(json.dumps(report))
    # an int8 report is not the float baseline; refused before the (missing) gated checkpoint
    assert main(["--dense-report", str(bad), "--gated", "nope.pt"]) == 2
    err = capsys.readouterr().err
    assert "--dense-report" in err and "dense.int8.eval.json" in err and "int8" in err
    assert main(["--dense-report", str(tmp_path / "none.json"), "--gated", "nope.pt"]) == 2
    assert "none.json" in capsys.readouterr().err
    # a --limit below the report's image count cannot match it: refused up front
    good = tmp_path / "dense.eval.json"
    good.write_text(json.dumps(dict(report, int8=False)))
    assert main(["--dense-report", str(good), "--gated", "nope.pt", "--limit", "500"]) == 2
    err = capsys.readouterr().err
    assert "dense.eval.json" in err and "10000 images" in err and "--limit 500" in err
    # one baseline or the other, not both, not neither
    for argv in (["--dense", "d.pt", "--dense-report", str(bad), "--gated", "g.pt"],
                 ["--gated", "g.pt"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
