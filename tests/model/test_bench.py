"""The model benchmark's argument checks (the benchmark itself is long and runs outside tests)."""

import json

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
