"""MAC counting (SPEC section 3, element level) on a hand-computed tiny network."""

import torch
import torch.nn as nn

from sluice.model.evaluate import WorkCounter, count_float
from sluice.model.gated import CGConv2d


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.gc = CGConv2d(4, 4, 3, padding=1, partitions=2)
        self.dc = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(50, 3)

    def forward(self, x):
        return self.fc(self.dc(self.gc(x)).flatten(1))


def test_tiny_network_by_hand():
    net = Tiny().eval()
    with torch.no_grad():
        net.gc.threshold.copy_(torch.tensor([100.0, 100.0, -100.0, -100.0]))  # 2 of 4 on
    counter = WorkCounter()
    handles = count_float(net, counter)
    with torch.no_grad():
        net(torch.randn(2, 4, 5, 5))
    for h in handles:
        h.remove()
    r = counter.report()
    # gated: M = 4*5*5 = 100 outputs, dense 100*4*9 = 3600 MACs; base 100*2*9 = 1800;
    # 50 outputs on pay (4-2)*9 = 18 more each: 2700
    # dense 1x1: 2*25*4 = 200; classifier 50*3 = 150
    assert r["macs_dense"] == 3600 + 200 + 150
    assert r["macs_theory"] == 2700 + 200 + 150
    assert r["reduction"] == 3950 / 3050
    assert r["gate_rate"] == 0.5
    gl = [row for row in r["layers"] if row["name"] == "gc"][0]
    assert gl["gated"] and gl["macs_dense"] == 3600 and gl["macs_theory"] == 2700
    assert [row for row in r["layers"] if row["name"] == "dc"][0]["reduction"] == 1.0


def test_all_gates_off_costs_base_only():
    c = WorkCounter()
    c.add("g", 8, 8, 3, 1, 4, 4, images=3, partitions=4, gate_on=0)
    r = c.report()
    assert r["reduction"] == 4.0 and r["gate_rate"] == 0.0
    c.add("g", 8, 8, 3, 1, 4, 4, images=1, partitions=4, gate_on=8 * 16)
    r = c.report()  # 3 images all off + 1 image all on
    assert r["macs_theory"] == (4 * 8 * 16 * 2 * 9 + 8 * 16 * 6 * 9) / 4
