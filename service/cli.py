"""The `specula` command: one entry point, one module per subcommand.

Each subcommand lives in the module that owns its job and exposes ``main(argv)`` with its own
argparse parser; this file only dispatches, importing lazily so that `specula serve` never
imports torch and `specula --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.api.serve", "run the HTTP inference service"),
    "classify": ("service.inference.offline", "classify spectrum files offline (no server)"),
    "inspect": ("service.spectra.inspect", "describe every spectrum in files (one JSON line each)"),
    "train": ("training.cli", "train a model and export it to models/ (needs the [train] extra)"),
}


def usage() -> str:
    lines = ["usage: specula COMMAND [options]   (specula COMMAND --help for details)", ""]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"specula: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
