"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Modules are named by their dotted path inside the package (``data.extract``; a package's own
``__init__`` is ``__init__`` or ``data.__init__``); stages by their command name (``extract``).
Two uses: each rule's code inputs are the import closure of the stage it runs (so editing any file
a stage really uses re-runs it, and nothing else does), and the architecture check
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
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The chain's order of the stages (``camvidseg --help`` lists them so); commands added later follow
# alphabetically.
CHAIN = ("sample", "obtain", "extract", "palette", "convert", "train", "evaluate", "visualize",
         "plots", "export", "card", "predict", "runcost", "leaderboard", "headline", "provenance",
         "compare", "lease")  # fmt: skip

# Shared rooms: the only modules a module may import. Stages are the modules with a ``main``
# (``camvidseg <stage>``, run by the rules); no module imports a stage. ``data.palette`` is both: a
# stage (parses class_dict.csv) and the room that owns the class table.
# docs/architecture.md explains this list; tests/test_codegraph.py checks the code against it.
ROOMS = (
    "__init__",
    "core.__init__",
    "core.errors",
    "core.fileio",
    "core.command",
    "core.settings",
    "core.progress",
    "core.device",
    "data.__init__",
    "data.images",
    "data.budget",
    "data.dataset",
    "data.identity",
    "data.palette",
    "data.colors",
    "training.__init__",
    "training.networks",
    "training.torchvision_import",
    "training.segmenter",
    "training.model",
    "training.resume",
    "training.launch",
    "training.allocator",
    "training.async_steps",
    "evaluation.__init__",
    "evaluation.metrics",
    "evaluation.inference",
    "evaluation.panel",
    "deploy.__init__",
    "deploy.runtime",
    "deploy.cost",
    "reporting.__init__",
    "reporting.figures",
    "reporting.pages",
    "workflow.__init__",
    "workflow.codegraph",
    "workflow.experiments",
    "workflow.madeby",
    "workflow.plan",
)

# Rooms that only shape what a person reads: the command line's usage and help, the progress
# line. No result depends on their bytes, so they are no rule's code input and no part of the
# training fingerprint (editing them re-runs nothing, and strands no checkpoint); what they import
# still counts (``core.command`` takes option defaults from ``core.settings``). The names other
# modules may use from each are listed: tests/test_codegraph.py fails when code uses anything else
# from them, so computation cannot move in unnoticed.
PRESENTATION = {
    "core.command": ("parser", "summary", "add_trained_model", "add_paths", "add_device"),
    "core.progress": ("Progress", "training_hook"),
}


def path_of(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The source file of a dotted module name (``data.__init__`` -> data/__init__.py)."""
    return package_dir.joinpath(*module.split(".")).with_suffix(".py")


def name_of(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """The dotted module name of a source file of the package."""
    return ".".join(Path(path).resolve().relative_to(package_dir.resolve()).with_suffix("").parts)


def modules(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every module of the package, by dotted name (``__main__`` only dispatches: left out)."""
    files = [p for p in package_dir.rglob("*.py") if p.stem != "__main__"]
    return sorted(name_of(p, package_dir) for p in files)


@functools.cache
def stages(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Stage name -> module, for modules with a top-level ``main``, in chain order: the one list
    of commands that rules and ``camvidseg <stage>`` run."""
    found = {m.rsplit(".", 1)[-1]: m for m in modules(package_dir)
             if "main" in _top_functions(path_of(m, package_dir))}  # fmt: skip
    order = {name: i for i, name in enumerate(CHAIN)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def module_of(name: str, package_dir: Path = PACKAGE_DIR) -> str:
    """A stage name's module; a dotted module name is returned as it is."""
    return stages(package_dir).get(name, name)


def docstring(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    return ast.get_docstring(_syntax(path_of(module, package_dir))) or ""


@functools.cache
def _syntax(path: Path) -> ast.Module:
    """A source file's syntax tree, parsed once per process (the stage list, the import closures
    and the docstrings all read it; never modified)."""
    return ast.parse(path.read_text(), filename=str(path))


def _top_functions(path: Path) -> set[str]:
    return {node.name for node in _syntax(path).body if isinstance(node, ast.FunctionDef)}


def _existing(parts: list[str], package_dir: Path) -> str | None:
    """The module that dotted ``parts`` name: a file, or a package's ``__init__``."""
    dotted = ".".join(parts)
    if parts and path_of(dotted, package_dir).is_file():
        return dotted
    if package_dir.joinpath(*parts, "__init__.py").is_file():
        return ".".join([*parts, "__init__"])
    return None


def _targets(importer: str, node: ast.ImportFrom | ast.Import, package_dir: Path) -> list[str]:
    """The package modules an import statement names (none when it names something outside)."""
    if isinstance(node, ast.Import):
        found = []
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                found.append(_existing(parts[1:], package_dir))
        return [f for f in found if f]
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE:
            return []
        base = parts[1:]
    else:
        here = importer.split(".")[:-1]  # the importer's package (for ``data.__init__``: data)
        if node.level - 1 > len(here):
            return []
        named = node.module.split(".") if node.module else []
        base = here[: len(here) - (node.level - 1)] + named
    # ``from base import x``: x is a module when a file of that name exists, else a name in base.
    found = [_existing([*base, alias.name], package_dir) or _existing(base, package_dir)
             for alias in node.names]  # fmt: skip
    return [f for f in found if f]


@functools.cache
def imports(module: str, package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """Package modules that ``module`` imports anywhere in its source (function bodies included)."""
    found = set()
    for node in _statements(_syntax(path_of(module, package_dir))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_targets(module, node, package_dir))
    found.discard(module)
    return frozenset(found)


def _statements(node: ast.AST):
    """Every statement in ``node``, nested blocks included; expressions are not entered (an import
    is a statement), which makes this several times faster than ``ast.walk`` at each workflow start.
    """
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, field, ()):
            yield child
            yield from _statements(child)


def _packages_of(module: str) -> list[str]:
    """The ``__init__`` modules Python runs before ``module``: the package and each subpackage."""
    parts = module.split(".")[:-1]
    return ["__init__"] + [".".join([*parts[: i + 1], "__init__"]) for i in range(len(parts))]


def closure(name: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """A stage's (or module's) module and every package module it imports, directly or not,
    with the package ``__init__`` files importing them runs; the presentation-only ones left out."""
    start = module_of(name, package_dir)
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports(module, package_dir))
            todo.extend(_packages_of(module))
    return sorted(seen - (PRESENTATION.keys() - {start}))


def code_files(name: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files a rule running ``camvidseg <stage>`` depends on."""
    return [path_of(module, package_dir) for module in closure(name, package_dir)]


def source_digest(name: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over what a stage's import closure computes: its syntax trees without docstrings and
    ``help=`` texts (the training fingerprint uses it: a checkpoint of other code is never
    resumed, and an edit of a comment, a docstring or a help text strands none)."""
    digest = hashlib.sha256()
    for module in closure(name, package_dir):
        code = computing_code(path_of(module, package_dir).read_text())
        digest.update(f"{module}\0{code}\0".encode())
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
