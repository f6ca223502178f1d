"""``camvidseg <stage> ...``: each stage of the workflow as a command (``python -m camvidseg``)."""

from __future__ import annotations

import ast
import importlib
import sys
import textwrap
from pathlib import Path

from . import __version__
from .command import summary

PACKAGE = Path(__file__).parent
# The chain's order (the workflow's rules, data to deployment), then the tools around it;
# commands added later follow alphabetically.
CHAIN = (
    "sample", "obtain", "extract", "palette", "convert", "train", "evaluate", "visualize",
    "plots", "export", "card", "predict", "runcost", "provenance", "leaderboard", "compare",
    "lease",
)  # fmt: skip
USAGE = (
    "usage: camvidseg <stage> [options]   (camvidseg <stage> --help: that stage's options)\n"
    "       camvidseg --version"
)


def stages() -> dict[str, str]:
    """Every module with a ``main`` (a command), with its one-line summary.

    Read from the sources (``ast``) rather than imported, so listing them loads no torch.
    """
    found = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found[path.stem] = summary(ast.get_docstring(tree))
    order = {name: i for i, name in enumerate(CHAIN)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def print_stages(out) -> None:
    print(USAGE, "", "stages:", sep="\n", file=out)
    for name, what in stages().items():
        # Whole descriptions, wrapped under their column rather than cut.
        lines = textwrap.wrap(what, width=100 - 15)
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
    if args[0] not in stages():
        known = ", ".join(stages())
        print(
            f"error: unknown stage {args[0]!r} (one of {known}; see camvidseg --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"camvidseg.{args[0]}")
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
