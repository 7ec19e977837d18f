"""The output FIFOs' class: Amaranth's ``SyncFIFOBuffered`` with its storage memory reachable.

Its storage's read port is enabled only while the FIFO holds a word behind the output register
(inner level above zero) and its write port only while that part is not full, so the two ports
are never enabled at the same address in one cycle (equal addresses mean empty or full). Board
builds therefore declare the storage's read/write collisions don't-care (``storage`` in
``hw.params.NO_COLLISION_MEMORIES``): without that, yosys emulates read-old-data on an iCE40
block RAM with a register of the written word and a bypass multiplexer (about 290 of the
iCEBreaker 2 x 2's logic cells for the accelerator's and the bridge's FIFOs).
``tests/hw/test_collisions.py`` checks the claim on the accelerator's FIFO, which is why the
storage's ports are exposed here (``read_ports``/``write_ports``, like a ``Memory``'s, after
elaboration).
"""

from __future__ import annotations

from amaranth.lib.fifo import SyncFIFOBuffered


class BufferedFIFO(SyncFIFOBuffered):
    """``SyncFIFOBuffered`` (same ports and behaviour) whose storage memory's ports can be
    inspected in simulation once the design is elaborated."""

    def __init__(self, *, width: int, depth: int):
        super().__init__(width=width, depth=depth)
        self._storage = None

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth > 1:  # (depth 0 and 1 have no memory)
            self._storage = m.submodules["storage"]
        return m

    def _ports(self, kind):
        if self._storage is None:
            raise RuntimeError("BufferedFIFO: the storage exists only once elaborated")
        return getattr(self._storage, kind)

    @property
    def read_ports(self):
        return self._ports("read_ports")

    @property
    def write_ports(self):
        return self._ports("write_ports")
