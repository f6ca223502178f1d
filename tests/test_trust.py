"""Issue 22.11: the trust boundary. Full unpickling happens in one place, for files inside the
run's own work dir only; every other load of the package is weights-only; the README says which
folders must be trusted."""

import ast
import os
from pathlib import Path

import pytest
import torch
from conftest import REPO

from camvidseg.core.errors import UserError
from camvidseg.training.resume import load_trusted
from camvidseg.training.segmenter import read_plain

PACKAGE = REPO / "src" / "camvidseg"


class RunsCode:
    """Unpickling this creates the file CAMVIDSEG_TEST_MARKER names: proof that code ran."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["CAMVIDSEG_TEST_MARKER"]),))


def loads(tree: ast.AST, function: str = "<module>"):
    """(innermost enclosing function, call) of every load call: x.load(...) / x.loads(...)."""
    for node in ast.iter_child_nodes(tree):
        inner = node.name if isinstance(node, ast.FunctionDef) else function
        named = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        named = named and isinstance(node.func.value, ast.Name)
        if named and node.func.attr in ("load", "loads"):
            yield function, node
        yield from loads(node, inner)


def keyword(call: ast.Call, name: str):
    found = [k.value for k in call.keywords if k.arg == name]
    return found[0].value if found and isinstance(found[0], ast.Constant) else None


def test_full_unpickling_happens_only_in_load_trusted_and_everything_else_is_weights_only():
    unsafe, checked = set(), 0
    for source in sorted(PACKAGE.glob("**/*.py")):
        for function, call in loads(ast.parse(source.read_text())):
            module = call.func.value.id
            where = f"{source.relative_to(PACKAGE)}:{call.lineno} in {function}"
            if module == "torch":
                checked += 1
                if keyword(call, "weights_only") is not True and function != "load_trusted":
                    unsafe.add(where)
            elif module == "pickle" or (module == "np" and keyword(call, "allow_pickle")):
                unsafe.add(where)
    assert checked >= 2
    assert unsafe == set(), "loads that may run code outside resume.load_trusted"
    trusted = [
        where
        for source in PACKAGE.glob("**/*.py")
        for function, call in loads(ast.parse(source.read_text()))
        if function == "load_trusted" and call.func.value.id == "torch"
        for where in [source.name]
    ]
    assert trusted == ["resume.py"]


@pytest.fixture
def code_payload(tmp_path, monkeypatch):
    """A torch file whose unpickling would run code, and where that code would leave a mark."""
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("CAMVIDSEG_TEST_MARKER", str(marker))
    work_dir = tmp_path / "results/train_work/abc"
    work_dir.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "epoch_1.pth"
    outside.parent.mkdir()
    torch.save({"state_dict": {}, "payload": RunsCode()}, outside)
    return marker, work_dir, outside


@pytest.mark.parametrize("how", ["direct", "relative escape", "symlink in the work dir"])
def test_a_checkpoint_outside_the_work_dir_is_never_unpickled(code_payload, how):
    marker, work_dir, outside = code_payload
    path = {
        "direct": outside,
        "relative escape": work_dir / ".." / ".." / ".." / "elsewhere" / "epoch_1.pth",
        "symlink in the work dir": work_dir / "epoch_9.pth",
    }[how]
    if how == "symlink in the work dir":
        path.symlink_to(outside)
    with pytest.raises(UserError, match="refusing to unpickle a checkpoint outside"):
        load_trusted(path, work_dir)
    assert not marker.exists()


def test_user_weights_that_need_code_are_refused_without_running_it(code_payload):
    marker, _, outside = code_payload
    with pytest.raises(UserError, match="not a plain weights file"):
        read_plain(outside, "train.load_from")
    assert not marker.exists()


def test_docs_name_the_folders_that_must_be_trusted():
    text = (REPO / "docs/reliability.md").read_text()
    section = text.split("### Which folders must be trusted", 1)[1].split("\n#", 1)[0]
    assert "`results/train_work/`" in section and "weights_only=True" in section
    assert "load_trusted" in section
