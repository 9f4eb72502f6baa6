"""Command line: ``fastnn demo | bench | profile | warmup`` (also ``python -m fastnn ...``).

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` (add its arguments) and ``run_cli(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fastnn._optional import MissingDependency

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("fastnn.demo", "train the tutorial network with NumPy and with fastnn, and compare"),
    "bench": ("fastnn.bench", "benchmark sweep: fastnn against the reference (and PyTorch, scikit-learn)"),
    "profile": ("fastnn.profiling", "where a training step spends its time, per phase"),
    "warmup": ("fastnn.warmup", "compile the kernels into the on-disk cache ahead of time"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that answers bad arguments with one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _available():
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        try:
            found[name] = (importlib.import_module(module), help_text)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return found


def build_parser():
    """The ``fastnn`` argument parser."""
    from fastnn import __version__

    parser = _Parser(prog="fastnn", description="Fast multilayer perceptrons on the CPU.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in _available().items():
        module.configure_parser(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None):
    """Entry point of the ``fastnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run_cli(args)
    except MissingDependency as exc:
        # an optional package the command needs: one line naming the extra
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # output piped into a program that stopped reading (e.g. `head`)
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
