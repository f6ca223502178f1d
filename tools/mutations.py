"""Seeded mutations of src/camvidseg/: does the test suite notice when the code is wrong?

Each mutation in ``tools/mutations.yaml`` replaces one exact snippet of one source file. Every
snippet must occur exactly once in today's code, checked before anything runs: a stale entry is
an error (exit 2), never a silent pass. The checkout (tracked and untracked, not ignored files) is
copied once to a scratch folder; the listed tests must pass there unmutated (else a failure would
prove nothing), then each mutation in turn is applied, its tests run, and the file restored.
A mutation is caught when its tests fail. Exit 0 when every mutation is caught, 1 otherwise.

    make mutations                                   # all of them
    python tools/mutations.py --only resume-picks-oldest
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LIST = REPO / "tools" / "mutations.yaml"
KEYS = {"id", "file", "find", "replace", "tests"}


def load(path: Path, only: list[str] | None) -> list[dict]:
    """The mutations of ``path`` (those named in ``only``); each checked against the code."""
    mutations = yaml.safe_load(path.read_text())
    problems = []
    for i, mutation in enumerate(mutations):
        if set(mutation) != KEYS:
            problems.append(f"entry {i + 1}: keys {sorted(mutation)}, expected {sorted(KEYS)}")
            continue
        count = (REPO / mutation["file"]).read_text().count(mutation["find"])
        if count != 1:
            problems.append(f"{mutation['id']}: snippet found {count} times in {mutation['file']}")
    unknown = set(only or ()) - {m.get("id") for m in mutations}
    problems += [f"--only: no mutation {name!r}" for name in sorted(unknown)]
    if problems:
        print(f"error: {path.name}: " + "; ".join(problems), file=sys.stderr)
        raise SystemExit(2)
    return [m for m in mutations if not only or m["id"] in only]


def tracked_copy(dest: Path) -> None:
    """The tracked files (and untracked, not ignored ones) of the checkout, copied to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listing.split("\0")):
        source, target = REPO / name, dest / name
        if not (source.is_file() or source.is_symlink()):
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    # The tests find ../shared beside the checkout.
    if (REPO.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(REPO.parent / "shared")


def run_tests(tree: Path, tests: list[str], timeout: int) -> tuple[bool, str]:
    """(whether the tests passed, the first failure or else pytest's summary line) on ``tree``."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    # No bytecode: a restored file may keep the size and mtime second of its mutant.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                                timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    lines = result.stdout.strip().splitlines() or [""]
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return result.returncode == 0, (failed or lines)[-1][:110]


def try_mutation(tree: Path, mutation: dict, timeout: int) -> tuple[bool, str]:
    """(caught, detail): apply ``mutation`` to ``tree``, run its tests, restore the file."""
    path = tree / mutation["file"]
    original = path.read_text()
    path.write_text(original.replace(mutation["find"], mutation["replace"]))
    try:
        passed, detail = run_tests(tree, mutation["tests"], timeout)
    finally:
        path.write_text(original)
    return not passed, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="mutation ids (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    args = parser.parse_args()
    mutations = load(LIST, args.only)
    with tempfile.TemporaryDirectory(prefix="mutations.") as scratch:
        tree = Path(scratch) / "repo"
        tracked_copy(tree)
        every_test = list(dict.fromkeys(t for m in mutations for t in m["tests"]))
        passed, detail = run_tests(tree, every_test, args.timeout)
        if not passed:
            print(f"error: the listed tests fail without any mutation: {detail}", file=sys.stderr)
            return 2
        caught = 0
        for mutation in mutations:
            start = time.monotonic()
            hit, detail = try_mutation(tree, mutation, args.timeout)
            caught += hit
            verdict = "caught" if hit else "NOT CAUGHT"
            seconds = time.monotonic() - start
            print(f"{verdict:10s} {mutation['id']:34s} {seconds:3.0f} s  {detail}", flush=True)
    print(f"mutation score: {caught}/{len(mutations)} caught")
    return 0 if caught == len(mutations) else 1


if __name__ == "__main__":
    sys.exit(main())
