"""The `specula` command: one entry point, one module per subcommand.

The parser is argparse with one subparser per command, so that ``specula --help`` lists them
all and a mistyped command gets argparse's "invalid choice" with the list. Each subcommand
still owns its options: it lives in the module that owns its job and exposes ``main(argv)``
with its own parser, which gets every argument after the command name (``specula serve
--help`` is serve's help). Modules are imported only when their command runs, so that
`specula serve` never imports torch and `specula --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

# `specula train TASK`: the tasks training.cli dispatches (kept here too so that --help
# lists them without importing the training package)
TRAIN_TASKS = ("spectra", "lightcone", "saliency")

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.api.serve", "run the HTTP inference service"),
    "classify": ("service.archive.classify", "classify spectrum files offline (no server)"),
    "inspect": ("service.inspect",
                "describe every spectrum or lightcone in files (one JSON line each)"),
    "train": ("training.cli", (f"train a model and export it to models/: "
                               f"{', '.join(TRAIN_TASKS)} (needs the [train] extra)")),
}


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), not a second copy of it."""
    try:
        return version("specula")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Top level only: each command's subparser takes no options of its own and passes
    everything after the command name (``-h`` included) to the command's ``main``."""
    parser = argparse.ArgumentParser(
        prog="specula", description="Probabilistic inference for astronomical spectra and "
                                    "21cm lightcones.",
        epilog="`specula COMMAND --help` lists a command's options.")
    parser.add_argument("--version", action="version",
                        version=f"specula {package_version()}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                     required=True)
    for name, (_, text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=text, description=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:  # a bare `specula` is a usage error: say what there is to run
        parser.print_help(sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
