"""``sluice build`` and ``sluice board ...``: bitstreams, and running layers on a board."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from sluice.errors import SluiceError
from sluice.hw.commands import PARAM_OPTIONS

SIM_DIVISOR = 4  # clocks per UART bit in the simulated board (--simulate)


def _board_params(args):
    from sluice.boards.platforms import get_board

    board = get_board(args.board)
    return board, board.params(**{k: getattr(args, k) for k in BOARD_OPTIONS})


def cmd_build(args) -> int:
    from sluice.boards.build import build

    if args.rows is not None and args.rows < 2 or args.cols is not None and args.cols < 2:
        raise SluiceError("--rows/--cols: the array needs at least 2 x 2")
    build(args.board, dense_only=args.dense_only,
          gated=args.gated, loopback=args.loopback, program=args.program,
          out_root=args.out_dir, seed=args.seed, router=args.router,
          clock_mhz=args.clock_mhz, **{k: getattr(args, k) for k in BOARD_OPTIONS},
          nextpnr_args=args.nextpnr_args, outreg=args.outreg,
          synth_only=args.synth_only, report_only=args.report_only)
    return 0


def cmd_board_list(args) -> int:
    from sluice.boards.platforms import BOARDS

    for b in BOARDS.values():
        print(f"{b.name:12s} {b.doc}; default {b.rows}x{b.cols} array"
              f"{'' if b.gated else ' (dense-only)'}, act_depth {b.act_depth}, "
              f"wgt_depth {b.wgt_depth}, pix_depth {b.pix_depth}, skip_cols {b.skip_cols}, "
              f"post_cols {b.post_cols}")
    return 0


def _open_link(args, board, params):
    """A Link to the real board on --port, or to the simulated one (--simulate)."""
    from sluice.boards.host import Link, SerialTransport

    if args.dense_only and args.gated:
        raise SluiceError("--dense-only and --gated: pick one")
    if args.simulate:
        from sluice.boards.simlink import SimTransport
        from sluice.boards.top import BoardTop

        # the bitstream `sluice build` makes: the board's default (the iCEBreaker's is
        # dense-only), or the one --dense-only / --gated names
        if args.dense_only or not (board.gated or args.gated):
            params = dataclasses.replace(params, gating=False)
        top = BoardTop(params, divisor=SIM_DIVISOR, in_buf_bytes=board.in_buf_bytes,
                       out_depth=board.out_depth)
        return Link(SimTransport(top, divisor=SIM_DIVISOR)), f"board-sim:{board.name}"
    if args.dense_only or args.gated:
        flag = "--dense-only" if args.dense_only else "--gated"
        raise SluiceError(f"{flag}: only with --simulate (a board's bitstream says "
                          "whether it is dense-only in its ID register)")
    if not args.port:
        raise SluiceError("--port: name the board's serial port (e.g. /dev/ttyUSB0), or pass "
                          "--simulate to run the bridge and accelerator in the simulator")
    baud = args.baud or board.baud
    return Link(SerialTransport(args.port, baud, timeout=args.timeout)), f"board:{board.name}"


@contextlib.contextmanager
def _board_runner(args):
    """A ``BoardRunner`` on the board (or the simulated one) the arguments name, and its
    ``Link``; the serial port is closed afterwards."""
    from sluice.boards.host import BoardRunner

    board, params = _board_params(args)
    link, runner_name = _open_link(args, board, params)
    try:
        yield BoardRunner(link, params, runner_name=runner_name), link
    finally:
        close = getattr(link.t, "close", None)
        if close:
            close()


def cmd_board_run_layer(args) -> int:
    from sluice.cli import check_against_refs
    from sluice.hw.cycle_model import array_steps
    from sluice.model.layerfile import read_layer, write_result

    if not args.output.endswith(".npz"):
        raise SluiceError(f"-o: {args.output!r} must end in .npz (e.g. OUT.result.npz)")
    layer = read_layer(args.layer)
    with _board_runner(args) as (runner, link):
        result = runner.run_layer(layer, dense=args.dense)
    write_result(args.output, result)
    steps = array_steps(result.cycles, result.counters)
    print(f"{layer.name}: {runner.runner_name}, {runner.params.rows}x{runner.params.cols} array, "
          f"cycles {result.cycles} (the serial link's waits included), array steps {steps} "
          f"(CYCLES - LOAD_CYCLES - STALL_CYCLES), {link.frames} frames "
          f"({link.retried} retried)")
    status = check_against_refs(layer, result, args.dense)
    print(f"wrote {args.output}")
    return status


def cmd_board_run_model(args) -> int:
    from sluice.boards.model_run import board_run_model
    from sluice.sim.model_run import print_summary

    if not Path(args.export_dir).is_dir():
        raise SluiceError(f"{args.export_dir}: not a directory (expected `sluice export` output)")
    with _board_runner(args) as (runner, link):
        s = board_run_model(runner, args.export_dir, args.out, dense=args.dense,
                            limit=args.layers, images=args.images, data_dir=args.data_dir)
    print(f"{link.frames} frames ({link.retried} retried)")
    return print_summary(s, args.out)


def cmd_board_ping(args) -> int:
    board, params = _board_params(args)
    link, runner_name = _open_link(args, board, params)
    info = link.ping()
    ident = link.read(0x00)
    print(f"{runner_name}: bridge protocol {info.version}, stream {info.stream_bytes} bytes, "
          f"result words {info.word_bytes} bytes, input buffer {info.in_buf_bytes} bytes; "
          f"accelerator ID 0x{ident:08x} ({ident >> 8 & 0xFF}x{ident & 0xFF})")
    return 0


#: the instance options of ``sluice build`` and the ``sluice board`` commands (the host plans
#: for, and --simulate runs, the instance built): ``PARAM_OPTIONS`` but the input stream's
#: width, which a board build sets from its columns (``Board.params``); each defaults to the
#: board's choice
BOARD_OPTIONS = tuple(f for f in PARAM_OPTIONS if f != "stream_width")


def _add_array_args(p):
    """The options of ``BOARD_OPTIONS``, for ``sluice build`` and the ``sluice board`` commands
    alike."""
    from sluice.hw.commands import add_instance_options

    add_instance_options(p, BOARD_OPTIONS, default="the board's")


def _add_board_args(p, port=True):
    p.add_argument("--board", default="icebreaker",
                   help="board whose bitstream is loaded (sets the array size and buffer "
                        "depths the host plans for; default icebreaker; see `sluice board "
                        "list`)")
    _add_array_args(p)  # (as the bitstream was built: `sluice build`'s options)
    if port:
        p.add_argument("--port", default=None, help="serial port, e.g. /dev/ttyUSB0")
        p.add_argument("--baud", type=int, default=None, help="baud rate (default: the "
                                                              "board's)")
        p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")
        p.add_argument("--simulate", action="store_true",
                       help="no board: run the bridge and the accelerator in the Amaranth "
                            "simulator behind a simulated UART (slow; small layers)")
        p.add_argument("--dense-only", action="store_true",
                       help="with --simulate: simulate the dense-only bitstream (`sluice build "
                            "--dense-only`); a real board's kind is read from its ID register")
        p.add_argument("--gated", action="store_true",
                       help="with --simulate: simulate the gated bitstream on a board whose "
                            "default build is dense-only (the iCEBreaker: `sluice build "
                            "--gated`, which does not fit it); --simulate alone simulates the "
                            "board's default build")


def add_commands(sub) -> None:
    from sluice.boards.build import ROUTERS  # no Amaranth or toolchain import: cheap here

    p = sub.add_parser("build", help="build a bitstream for an FPGA board (YoWASP toolchain)",
                       description="Synthesise, place and route the UART bridge and the "
                                   "accelerator for a board with yosys and nextpnr from PyPI "
                                   "(YoWASP), and write a resource/timing report (JSON and "
                                   "Markdown) next to the bitstream.")
    p.add_argument("--board", required=True, help="board name (see `sluice board list`)")
    p.add_argument("--dense-only", action="store_true",
                   help="leave the gating logic out at elaboration (the baseline of the gating "
                        "cost); the default on a board where the gated build does not fit "
                        "(the iCEBreaker)")
    p.add_argument("--gated", action="store_true",
                   help="build the gating logic on a board whose default build is dense-only "
                        "(the iCEBreaker, where it does not fit)")
    _add_array_args(p)
    p.add_argument("--outreg", action="store_true",
                   help="ECP5: move the flip-flops behind block-RAM read ports into the blocks' "
                        "output registers between yosys and nextpnr (function unchanged; "
                        "with --feed-regs 2 on the 8x8 builds, boards/README.md)")
    p.add_argument("--nextpnr-args", default="",
                   help="more nextpnr options, appended to Sluice's (quote them), e.g. "
                        "'--placer-heap-beta 0.6' to spread a congested placement")
    p.add_argument("--synth-only", action="store_true",
                   help="stop after synthesis: yosys's cell counts and (ECP5) the estimated "
                        "slowest paths in NAME.estimate.json, in minutes instead of hours")
    p.add_argument("--report-only", action="store_true",
                   help="run no tool: write the reports from the logs of a finished build "
                        "with the same options (e.g. one whose script was run by hand)")
    p.add_argument("--loopback", action="store_true",
                   help="bridge + a loopback stand-in instead of the accelerator (link "
                        "bring-up)")
    p.add_argument("--program", action="store_true", help="program the board with "
                                                          "openFPGALoader after the build")
    p.add_argument("--out-dir", default="build/boards", help="build root (default "
                                                             "build/boards)")
    p.add_argument("--seed", default="1", metavar="N[,N...]",
                   help="nextpnr placement seed; several (2,3,4): synthesise once, place and "
                        "route with each in turn until one meets timing, keep the best "
                        "(its report lists them)")
    p.add_argument("--router", default=ROUTERS[0], choices=ROUTERS,
                   help=f"nextpnr router (default {ROUTERS[0]}; router2 routes the larger "
                        "ECP5 arrays much faster)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="design clock from the board's PLL (ECP5 boards; default: the "
                        "oscillator), made exactly or refused; the UART then runs at the "
                        "fastest standard rate the clock divides (60: 3 Mbaud on the ULX3S)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("board", help="talk to a board running a Sluice bitstream",
                       description="Run layers on a board over its USB serial port.")
    bsub = p.add_subparsers(dest="board_command", metavar="SUBCOMMAND", required=True)

    q = bsub.add_parser("run-layer", help="run one layer file on the board",
                        description="Run LAYER.npz on the board through the UART bridge (the "
                                    "same host sequence as the testbenches) and write "
                                    "OUT.result.npz; checked against y_ref/gate_ref when the "
                                    "layer file has them (exit 1 on a mismatch).")
    q.add_argument("layer", metavar="LAYER.npz")
    q.add_argument("-o", "--output", required=True, metavar="OUT.result.npz")
    q.add_argument("--dense", action="store_true", help="switch gating off for this run")
    _add_board_args(q)
    q.set_defaults(func=cmd_board_run_layer)

    q = bsub.add_parser("run-model", help="run an exported network on the board, layer by layer",
                        description="Run every layer of a `sluice export` directory on the board "
                                    "(each fed with the board's own earlier outputs, gated "
                                    "layers again in dense mode for the speedup), check "
                                    "outputs, gates and final logits against the integer model, "
                                    "and write layers.md/.csv, speedup.png and summary.json, as "
                                    "`sluice run-model` does on the RTL. Exit 1 on any "
                                    "mismatch.")
    q.add_argument("export_dir", metavar="EXPORT_DIR")
    q.add_argument("-o", "--out", default="build/board-run-model", help="report folder")
    q.add_argument("--layers", type=int, default=0, help="only the first N layers (0: all)")
    q.add_argument("--images", type=int, default=1,
                   help="the export's sample image and the N - 1 after it in its data set, "
                        "stacked as `sluice run-model --images` stacks them (each image in "
                        "jobs of its own unless the bitstream was built with --stacking 1), "
                        "each checked on its own; the correct classes counted (default 1)")
    q.add_argument("--data-dir", default=None,
                   help="data set folder for --images (as for sluice train)")
    q.add_argument("--dense", action="store_true",
                   help="every layer in dense mode (the only way on a dense-only bitstream, "
                        "such as the iCEBreaker's default); the logits are then reported, not "
                        "checked")
    _add_board_args(q)
    q.set_defaults(func=cmd_board_run_model)

    q = bsub.add_parser("ping", help="check the link: bridge info and the accelerator's ID")
    _add_board_args(q)
    q.set_defaults(func=cmd_board_ping)

    q = bsub.add_parser("list", help="the boards Sluice builds for, with their defaults")
    q.set_defaults(func=cmd_board_list)
