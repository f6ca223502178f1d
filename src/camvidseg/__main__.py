"""``camvidseg <stage> ...``: each stage of the workflow as a command (``python -m camvidseg``)."""

from __future__ import annotations

import importlib
import sys
import textwrap

from . import __version__
from .core.command import summary
from .workflow import codegraph

USAGE = (
    "usage: camvidseg <stage> [options]   (camvidseg <stage> --help: that stage's options)\n"
    "       camvidseg --version"
)


def print_stages(out) -> None:
    """The stages in chain order, each with its whole summary (wrapped under its column, never
    cut); read from the sources (``ast``), so listing them loads no torch."""
    print(USAGE, "", "stages:", sep="\n", file=out)
    for name, module in codegraph.stages().items():
        lines = textwrap.wrap(summary(codegraph.docstring(module)), width=100 - 15)
        print(f"  {name:12s} " + f"\n{' ' * 15}".join(lines), file=out)


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        print_stages(sys.stdout)
        return 0
    if args == ["--version"]:
        print(f"camvidseg {__version__}")
        return 0
    if not args:
        print_stages(sys.stderr)
        return 2
    stages = codegraph.stages()
    if args[0] not in stages:
        known = ", ".join(stages)
        print(
            f"error: unknown stage {args[0]!r} (one of {known}; see camvidseg --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"camvidseg.{stages[args[0]]}")
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
