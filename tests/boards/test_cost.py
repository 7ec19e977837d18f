"""The netlist cost attribution (`sluice.boards.cost`): each combinational cell charged to the
endpoints its output reaches."""

import json

import pytest

from sluice.boards import cost
from sluice.errors import SluiceError


def _cell(typ, conns, outputs, src="top.py:1"):
    return {"type": typ, "attributes": {"src": src}, "connections": conns,
            "port_directions": {p: ("output" if p in outputs else "input") for p in conns}}


def _ff(d, q, src="top.py:1"):
    return _cell("TRELLIS_FF", {"CLK": [1], "DI": [d], "Q": [q]}, {"Q"}, src)


def _lut(ins, z):
    return _cell("LUT4", {"A": [ins[0]], "B": [ins[1] if len(ins) > 1 else "0"], "C": ["0"],
                          "D": ["0"], "Z": [z]}, {"Z"})


def _netlist(cells):
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells}}}


def _gated():
    """a -> l1 -> b; l1 -> l2 -> c (l1 shared by b and c); a -> l2 too; a carry cell into two
    bits of d; two slots of one field; an unnamed register; a LUT that reaches nothing; a
    combinational loop l5 <-> l6 feeding e; a block RAM fed by l7."""
    return _netlist({
        "acc.a_TRELLIS_FF_Q": _ff(2, 10),
        "l1": _lut([10], 11),
        "acc.b_TRELLIS_FF_Q": _ff(11, 12),
        "l2": _lut([11, 10], 13),
        "acc.c_TRELLIS_FF_Q": _ff(13, 14),
        "c0": _cell("CCU2C", {"A0": [10], "CIN": ["0"], "S0": [20], "S1": [21], "COUT": [22]},
                    {"S0", "S1", "COUT"}),
        "acc.d_TRELLIS_FF_Q": _ff(20, 30),
        "acc.d_TRELLIS_FF_Q_1": _ff(21, 31),
        "acc.slot_0_TRELLIS_FF_Q": _ff(10, 40),
        "acc.slot_1_TRELLIS_FF_Q": _ff(40, 41),
        "acc.skew_q12_3_TRELLIS_FF_Q": _ff(40, 43),
        "acc.skew_q2_0_TRELLIS_FF_Q": _ff(43, 44),
        "acc.d1_psum_0_TRELLIS_FF_Q": _ff(44, 45),
        "acc.d2_psum_0_TRELLIS_FF_Q": _ff(45, 46),
        "acc.$auto_TRELLIS_FF_Q": _ff(41, 42, "/share/x.v:1|/work/hw/top.py:77"),
        "l4": _lut([42], 50),
        "l5": _lut([42, 52], 51),
        "l6": _lut([51], 52),
        "acc.e_TRELLIS_FF_Q": _ff(52, 53),
        "l7": _lut([53], 60),
        "acc.buf.0.0": _cell("DP16KD", {"CLKA": [1], "ADA0": [60], "DOA0": [61]}, {"DOA0"}),
        "m": _cell("PFUMX", {"ALUT": [61], "BLUT": [10], "C0": [12], "Z": [62]}, {"Z"}),
        "acc.f_TRELLIS_FF_Q": _ff(62, 63),
        "scope": {"type": "$scopeinfo", "connections": {}, "port_directions": {}},
    })


def test_cells_are_charged_to_the_endpoints_they_reach():
    got = cost.charge(_gated())
    assert got["acc.b"]["lut"] == pytest.approx(0.5)  # l1, shared with c
    assert got["acc.c"]["lut"] == pytest.approx(1.5)  # half of l1, all of l2
    assert got["acc.d"] == {"ff": 2, "carry": 1}  # both bits under one name
    assert got["acc.slot_*"]["ff"] == 2  # indices grouped by field
    assert got["acc.skew_q*_*"]["ff"] == 2  # a letter and an index after "_" too
    assert got["acc.d1_psum_*"]["ff"] == got["acc.d2_psum_*"]["ff"] == 1  # a first part kept
    assert got["acc.<top.py:77>"]["ff"] == 1  # unnamed: by its source line
    assert got["(unreached)"]["lut"] == 1  # l4
    assert got["acc.e"]["lut"] == 2  # the loop l5 <-> l6, cut, both cells charged
    assert got["acc.buf.*.*"] == {"DP16KD": 1, "lut": 1}
    assert got["acc.f"] == {"ff": 1, "mux": 1}
    every = sum(v.get(k, 0) for v in got.values() for k in ("lut", "carry", "mux"))
    assert every == pytest.approx(8)  # each combinational cell once: 6 LUT4, 1 CCU2C, 1 PFUMX
    by_reg = cost.charge(_gated(), by="register")
    assert by_reg["acc.slot_0"]["ff"] == by_reg["acc.slot_1"]["ff"] == 1
    with pytest.raises(SluiceError, match="--by"):
        cost.charge(_gated(), by="module")


def test_table_and_difference():
    a = cost.charge(_gated())
    lines = cost.table(a, top=3)
    assert lines[0].split()[:2] == ["logic", "LUT4"]
    # logic = LUT4 + 2 x carry: d holds the carry cell (2), c 1.5 LUT4
    assert lines[1].split()[0] == "2" and lines[1].endswith("acc.d")
    assert lines[-1].split()[0] == "8"  # 6 LUT4 + 2 x 1 CCU2C (+ the PFUMX, not in logic)
    smaller = _gated()
    del smaller["modules"]["top"]["cells"]["c0"]
    lines = cost.table(a, cost.charge(smaller), top=2)
    assert lines[1].split()[2] == "+2" and lines[1].endswith("acc.d")
    assert lines[-1].split()[2] == "+2"


def test_differences_list_the_most_and_the_least():
    a = {"x": {"lut": 5, "ff": 2}, "z": {"lut": 1}, "w": {"lut": 2}}
    b = {"x": {"lut": 1}, "y": {"lut": 3, "ff": 1}, "z": {"lut": 1}, "w": {"lut": 1}}
    assert cost.differences(a, b, top=1) == [
        {"field": "x", "logic": [5, 1], "ff": [2, 0]},
        {"field": "y", "logic": [0, 3], "ff": [0, 1]}]  # less in a: listed last
    assert [r["field"] for r in cost.differences(a, b, top=2, fewer=0)] == ["x", "w"]
    assert [r["field"] for r in cost.differences(a, b, top=4)] == ["x", "w", "z", "y"]


def _named(cells, nets):
    nl = _netlist(cells)
    nl["modules"]["top"]["netnames"] = {n: {"hide_name": 0, "bits": b} for n, b in nets.items()}
    return nl


def test_a_merged_register_is_listed_under_its_partners_name():
    """yosys keeps one name for registers it merged; the others stay on the output net, and
    against a partner netlist the register takes the name the partner uses."""
    gated = _named({"acc.a_TRELLIS_FF_Q": _ff(2, 10), "l1": _lut([10], 11),
                    "acc.gate_psum_0_TRELLIS_FF_Q": _ff(11, 12),
                    "acc.x_0_TRELLIS_FF_Q": _ff(12, 13), "l2": _lut([13], 14),
                    "acc.e_TRELLIS_FF_Q": _ff(14, 15)},
                   {"acc.a": [10], "acc.gate_psum_0": [12], "acc.d1_psum_0": [12],
                    "acc.x_0": [13], "acc.y_0": [13],
                    # generated names (yosys's mapping suffixes, $) are no aliases
                    "acc.e_TRELLIS_FF_Q_DI_LUT4_Z": [13], "acc.$f": [13]})
    dense = _named({"acc.a_TRELLIS_FF_Q": _ff(2, 10), "l1": _lut([10], 11),
                    "acc.d1_psum_0_TRELLIS_FF_Q": _ff(11, 12),
                    "acc.y_0_TRELLIS_FF_Q": _ff(12, 13), "acc.e_TRELLIS_FF_Q": _ff(13, 15)},
                   {"acc.a": [10], "acc.d1_psum_0": [12], "acc.y_0": [13], "acc.x_0": [13]})
    assert "acc.gate_psum_*" in cost.charge(gated)  # alone: the surviving name
    a, b = cost.charge_pair(gated, dense)
    assert a["acc.d1_psum_*"] == b["acc.d1_psum_*"] == {"ff": 1, "lut": 1}
    assert "acc.gate_psum_*" not in a
    # x in one, y in the other, each an alias of the other: one name on both sides
    assert set(a) == set(b) == {"acc.a", "acc.d1_psum_*", "acc.y_*", "acc.e"}
    # an alias that yosys generated (acc.e_..._LUT4_Z on y's output) is not taken
    assert a["acc.y_*"] == {"ff": 1} and a["acc.e"] == {"ff": 1, "lut": 1}
    assert cost.differences(a, b, top=2) == [
        {"field": "acc.e", "logic": [1, 0], "ff": [1, 1]},
        {"field": "acc.a", "logic": [0, 0], "ff": [1, 1]}]


def test_ice40_carries_count_with_their_luts():
    nl = _netlist({"acc.a_SB_DFF_Q": _cell("SB_DFF", {"C": [1], "D": [2], "Q": [10]}, {"Q"}),
                   "l": _cell("SB_LUT4", {"I0": [10], "O": [11]}, {"O"}),
                   "k": _cell("SB_CARRY", {"I0": [10], "CO": [12]}, {"CO"}),
                   "acc.b_SB_DFFE_Q_3": _cell("SB_DFFE", {"C": [1], "D": [11], "E": [12],
                                                          "Q": [13]}, {"Q"})})
    assert cost._carry_weight(nl, "x") == 0
    got = cost.charge(nl)
    assert got["acc.b"] == {"ff": 1, "lut": 1, "carry": 1}
    assert cost.table(got, carry_weight=0)[-1].split()[0] == "1"


def test_cli(tmp_path, capsys):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_gated()))
    assert cost.main([str(p), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[1].endswith("acc.d")
    assert cost.main([str(p), "--against", str(p)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[2] == "+0"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert cost.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cost: error: ") and str(bad) in err and "\n" not in err.strip()
    assert cost.main([str(p), "--against", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert cost.main([str(p), "--top", "0"]) == 2
    assert capsys.readouterr().err == "cost: error: --top: 0 must be at least 1\n"
