"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Two uses: each rule's code inputs are the import closure of the stage module it runs (so editing
any file a stage really uses re-runs it, and nothing else does), and the architecture check
(docs/architecture.md): stages import only shared rooms, never each other. The closure counts
code at the grain of what a stage computes: presentation-only modules (``PRESENTATION``) are left
out, and the training fingerprint hashes the code without its docstrings, comments and help texts.
The Snakefile imports this module while it parses, so it uses the standard library only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "camvidseg"
PACKAGE_DIR = Path(__file__).resolve().parent

# Shared rooms: the only modules a module may import. Stages are the modules with a ``main``
# (``camvidseg <stage>``, run by the rules); no module imports a stage. ``palette`` is both: a
# stage (parses class_dict.csv) and the room that owns everything about classes and colors.
# docs/architecture.md explains this list; tests/test_codegraph.py checks the code against it.
ROOMS = (
    "__init__",
    "errors",
    "fileio",
    "command",
    "settings",
    "images",
    "dataset",
    "model",
    "metrics",
    "inference",
    "deploy",
    "cost",
    "device",
    "allocator",
    "resume",
    "launch",
    "palette",
    "colors",
    "panel",
    "progress",
    "identity",
    "madeby",
    "codegraph",
    "experiments",
    "figures",
    "pages",
)

# Rooms that only shape what a person reads: the command line's usage and help, the progress
# line. No result depends on their bytes, so they are no rule's code input and no part of the
# training fingerprint (editing them re-runs nothing, and strands no checkpoint); what they import
# still counts (``command`` takes option defaults from ``settings``). The names other modules may
# use from each are listed: tests/test_codegraph.py fails when code uses anything else from them,
# so computation cannot move in unnoticed.
PRESENTATION = {
    "command": ("parser", "summary", "add_trained_model", "add_paths", "add_device"),
    "progress": ("Progress", "training_hook"),
}


def modules(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every module of the package, by name (``__init__`` is the package itself)."""
    return sorted(p.stem for p in package_dir.glob("*.py") if p.stem != "__main__")


def stages(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Modules with a top-level ``main``: the commands that rules and ``camvidseg <stage>`` run."""
    return [m for m in modules(package_dir) if "main" in _top_functions(package_dir / f"{m}.py")]


def _top_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=path.name)
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def _target(node: ast.ImportFrom | ast.Import, alias: ast.alias, package_dir: Path) -> str | None:
    """The package module an import names, or None when it names something outside."""
    if isinstance(node, ast.Import):
        parts = alias.name.split(".")
        if parts[0] != PACKAGE:
            return None
        return parts[1] if len(parts) > 1 else "__init__"
    if node.level == 0 and not (node.module or "").startswith(PACKAGE):
        return None
    if node.level > 1:
        return None
    dotted = (node.module or "").removeprefix(PACKAGE).lstrip(".")
    if dotted:
        return dotted.split(".")[0]
    # ``from . import x``: x is a module when a file of that name exists, else a name in __init__.
    return alias.name if (package_dir / f"{alias.name}.py").is_file() else "__init__"


@functools.cache
def imports(module: str, package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """Package modules that ``module`` imports anywhere in its source (function bodies included)."""
    tree = ast.parse((package_dir / f"{module}.py").read_text(), filename=f"{module}.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(t for alias in node.names if (t := _target(node, alias, package_dir)))
    found.discard(module)
    return frozenset(found)


def closure(module: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``module`` and every package module it imports, directly or not, but the presentation-only
    ones; importing any module of the package runs ``__init__`` first, so that is always part."""
    seen: set[str] = set()
    todo = [module, "__init__"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name, package_dir))
    return sorted(seen - (PRESENTATION.keys() - {module}))


def code_files(module: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files a rule running ``python -m camvidseg.<module>`` depends on."""
    return [package_dir / f"{name}.py" for name in closure(module, package_dir)]


def source_digest(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over what ``module``'s import closure computes: its syntax tree without docstrings
    and ``help=`` texts (the training fingerprint uses it: a checkpoint of other code is never
    resumed, and an edit of a comment, a docstring or a help text strands none)."""
    digest = hashlib.sha256()
    for path in code_files(module, package_dir):
        digest.update(f"{path.name}\0{computing_code(path.read_text())}\0".encode())
    return digest.hexdigest()


def computing_code(source: str) -> str:
    """``source`` as its syntax tree, less what only people read: docstrings and help texts."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.Call):
            node.keywords = [k for k in node.keywords if k.arg != "help"]
    return ast.dump(tree)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )
