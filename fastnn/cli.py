"""Command line: ``fastnn demo`` (also ``python -m fastnn demo``)."""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse that answers bad arguments with one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    """The ``fastnn`` argument parser."""
    parser = _Parser(prog="fastnn", description="Fast multilayer perceptrons on the CPU.")
    from fastnn import __version__

    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser(
        "demo", help="train the tutorial network with NumPy and with fastnn, and compare"
    )
    demo.add_argument("--iterations", type=_positive_int, default=1500, help="training iterations (1500)")
    demo.add_argument("--repeats", type=_positive_int, default=5, help="timed repeats; the median is shown (5)")
    demo.add_argument("--seed", type=int, default=1, help="NumPy global seed for the initial weights (1)")
    return parser


def _cmd_demo(args):
    from fastnn.demo import format_demo, run_demo

    print(format_demo(run_demo(args.iterations, args.repeats, args.seed)))
    return 0


def main(argv=None):
    """Entry point of the ``fastnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
