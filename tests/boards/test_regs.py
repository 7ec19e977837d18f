"""Flip-flops by register (`python -m sluice.boards.regs`) on small hand-made netlists."""

import json

import pytest

from sluice.boards import regs
from sluice.errors import SluiceError


def _ff(typ, q):
    return {"type": typ, "connections": {"C": [1], "D": [q + 100], "Q": [q]}}


def _netlist():
    """ECP5 and iCE40 flip-flops: acc.par_bias_0 (2 bits), acc.par_bias_1 (1), bridge.count
    (2), one named only by a generated net, and a LUT that is not counted."""
    cells = {"f0": _ff("TRELLIS_FF", 10), "f1": _ff("TRELLIS_FF", 11),
             "f2": _ff("SB_DFFE", 12), "f3": _ff("SB_DFFESR", 20), "f4": _ff("SB_DFF", 21),
             "acc.x_SB_DFF_Q": _ff("SB_DFF", 30),
             "l0": {"type": "SB_LUT4", "connections": {"I0": [10], "O": [40]}}}
    netnames = {"acc.par_bias_0": {"bits": [10, 11]}, "$auto$x.cc:1$5": {"bits": [10]},
                "acc.par_bias_1": {"bits": [12]}, "bridge.count": {"bits": [20, 21]},
                "$auto$gen$7": {"bits": [30]}}
    small = {"cells": {}, "netnames": {}}
    return {"modules": {"small": small,
                        "top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells, "netnames": netnames}}}


def test_counts_by_register_and_by_module():
    by_reg = regs.count(_netlist())
    assert by_reg == {"acc.par_bias_N": 3, "bridge.count": 2, "acc.x_SB_DFF_Q": 1}
    assert regs.count(_netlist(), by="module") == {"acc": 4, "bridge": 2}


def test_unpacked_counts_flip_flops_without_a_lut_of_their_own():
    """iCE40 packing: a flip-flop fed by a LUT that drives nothing else shares its cell; one
    fed by a LUT with a second load, by another flip-flop or by a port does not."""
    def cell(typ, conns, dirs):
        return {"type": typ, "connections": conns, "port_directions": dirs}

    lut = {"I0": "input", "O": "output"}
    ff = {"C": "input", "D": "input", "Q": "output"}
    cells = {
        "l_own": cell("SB_LUT4", {"I0": [2], "O": [50]}, lut),      # feeds f_packed only
        "l_shared": cell("SB_LUT4", {"I0": [2], "O": [51]}, lut),   # feeds f_a and f_b
        "f_packed": cell("SB_DFF", {"C": [1], "D": [50], "Q": [60]}, ff),
        "f_a": cell("SB_DFF", {"C": [1], "D": [51], "Q": [61]}, ff),
        "f_b": cell("SB_DFFE", {"C": [1], "D": [51], "Q": [62]}, ff),
        "f_chain": cell("SB_DFF", {"C": [1], "D": [60], "Q": [63]}, ff),  # from a register
    }
    netnames = {"p.x": {"bits": [60]}, "p.sum": {"bits": [61]}, "p.copy": {"bits": [62]},
                "p.delay": {"bits": [63]}}
    net = {"modules": {"t": {"attributes": {"top": 1}, "cells": cells, "netnames": netnames}}}
    assert regs.count(net) == {"p.x": 1, "p.sum": 1, "p.copy": 1, "p.delay": 1}
    assert regs.count(net, unpacked=True) == {"p.sum": 1, "p.copy": 1, "p.delay": 1}


def test_fold():
    assert regs.fold("acc.post_0.rp_12[3]") == "acc.post_N.rp_N"
    assert regs.fold("acc.bias$1814") == "acc.bias"
    assert regs.fold("acc.skew_q31_2_0") == "acc.skew_q31_N_N"


def test_command_line(tmp_path, capsys):
    path = tmp_path / "n.json"
    path.write_text(json.dumps(_netlist()))
    assert regs.main([str(path), "--top", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["3", "acc.par_bias_N"]
    assert out[-1].split()[:2] == ["6", "flip-flops"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "n.json"),
    (json.dumps({"modules": {}}), "no single top module"),
])
def test_bad_netlists_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "n.json"
    path.write_text(content)
    assert regs.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regs: error:") and message in err and "\n" not in err
    with pytest.raises(SluiceError):
        regs.count({"modules": {"t": {}}}, by="bits")
