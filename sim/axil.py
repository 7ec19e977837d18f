"""A small AXI4-Lite master for cocotb 2.x, and register access by name (``hw.params.REG``)."""

from __future__ import annotations

from cocotb.triggers import RisingEdge

from sluice.hw.params import REG


class AxiLiteError(Exception):
    pass


class AxiLiteMaster:
    """Drives ``<prefix>aw*/w*/b*/ar*/r*`` on ``dut``; one transaction at a time.

    Handshakes are sampled right after the rising edge, i.e. as the DUT saw them at that edge.
    """

    def __init__(self, dut, clk, prefix: str = "axil_", timeout_cycles: int = 1000):
        self.dut, self.clk, self.timeout = dut, clk, timeout_cycles
        self.s = {name: getattr(dut, prefix + name) for name in (
            "awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
            "bvalid", "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid",
            "rready")}
        self.idle()

    def idle(self):
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready", "awaddr", "wdata",
                     "wstrb", "araddr"):
            self.s[name].value = 0

    async def _handshake(self, pending: dict):
        for _ in range(self.timeout):
            await RisingEdge(self.clk)
            for valid, ready in list(pending.items()):
                if int(self.s[ready].value):
                    self.s[valid].value = 0
                    del pending[valid]
            if not pending:
                return
        raise AxiLiteError(f"AXI4-Lite handshake timed out waiting for {sorted(pending)}")

    async def write(self, addr: int, data: int):
        s = self.s
        s["awaddr"].value = addr
        s["wdata"].value = data & 0xFFFFFFFF
        s["wstrb"].value = 0xF
        s["awvalid"].value = 1
        s["wvalid"].value = 1
        await self._handshake({"awvalid": "awready", "wvalid": "wready"})
        s["bready"].value = 1
        for _ in range(self.timeout):
            await RisingEdge(self.clk)
            if int(s["bvalid"].value):
                resp = int(s["bresp"].value)
                s["bready"].value = 0
                if resp:
                    raise AxiLiteError(f"write to 0x{addr:02x} answered BRESP={resp}")
                return
        raise AxiLiteError(f"write to 0x{addr:02x}: no BVALID")

    async def read(self, addr: int) -> int:
        s = self.s
        s["araddr"].value = addr
        s["arvalid"].value = 1
        await self._handshake({"arvalid": "arready"})
        s["rready"].value = 1
        for _ in range(self.timeout):
            await RisingEdge(self.clk)
            if int(s["rvalid"].value):
                data, resp = int(s["rdata"].value), int(s["rresp"].value)
                s["rready"].value = 0
                if resp:
                    raise AxiLiteError(f"read of 0x{addr:02x} answered RRESP={resp}")
                return data
        raise AxiLiteError(f"read of 0x{addr:02x}: no RVALID")

    async def write_reg(self, name: str, value: int):
        await self.write(REG[name].addr, value)

    async def read_reg(self, name: str) -> int:
        return await self.read(REG[name].addr)
