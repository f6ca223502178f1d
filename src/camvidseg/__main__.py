"""``camvidseg <stage> ...``: each stage of the workflow as a command (``python -m camvidseg``)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from .command import summary

PACKAGE = Path(__file__).parent
# The chain's order; commands added later follow alphabetically.
CHAIN = ("sample", "obtain", "extract", "palette", "convert", "train", "evaluate", "visualize")
USAGE = "usage: camvidseg <stage> [options]   (camvidseg <stage> --help: that stage's options)"


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
        print(f"  {name:12s} {what}", file=out)


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        print_stages(sys.stdout)
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
