"""Seeded mutations of src/camvidseg/: does the test suite as a whole notice wrong code?

Each mutation in ``tools/mutations.yaml`` replaces one exact snippet of one source file. Every
snippet must occur exactly once in today's code, checked before anything runs: a stale entry is
an error (exit 2), never a silent pass. The checkout (tracked and untracked, not ignored files) is
copied once to a scratch folder, where the whole suite must pass unmutated, else a failure would
prove nothing. Then each mutation in turn is applied, the suite run, and the file restored. A
mutation is caught when some test fails; a run past ``--timeout`` counts as not caught. The suite
runs in two parts, each stopping at its first failure: the quick tests (``make quick``), then, for
a mutation they miss, the rest (slow and SLURM). The tests an entry ``expect``s to catch it run
first, alone, only so that a caught mutation stops early: the verdict is the whole suite's.
Exit 0 when every mutation is caught, 1 otherwise.

    make mutations                                   # all of them
    python tools/mutations.py --only resume-picks-oldest
    python tools/mutations.py --only lr-not-configured --tests tests/test_train.py  # quick check
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
REQUIRED = {"id", "file", "find", "replace"}
OPTIONAL = {"expect"}
# The whole suite in two parts: what a developer runs between edits (`make quick`), then the rest;
# a mutation the first part catches stops early (pyproject.toml defines the markers).
WHOLE_SUITE = [["-m", "not slow and not slurm", "tests"], ["-m", "slow or slurm", "tests"]]
NO_TESTS_COLLECTED = 5  # pytest's exit status when the selection is empty
# It fails on every mutated copy (the snippet is gone): this tool checks the list itself, in load().
NOT_RUN = ["--deselect", "tests/test_units.py::test_every_seeded_mutation_still_matches_the_code"]


def load(path: Path, only: list[str] | None) -> list[dict]:
    """The mutations of ``path`` (those named in ``only``); each checked against the code."""
    mutations = yaml.safe_load(path.read_text())
    problems = []
    for i, mutation in enumerate(mutations):
        keys = set(mutation)
        if not REQUIRED <= keys <= REQUIRED | OPTIONAL:
            problems.append(
                f"entry {i + 1}: keys {sorted(keys)}, expected {sorted(REQUIRED)} "
                f"and optionally {sorted(OPTIONAL)}"
            )
            continue
        count = (REPO / mutation["file"]).read_text().count(mutation["find"])
        if count != 1:
            problems.append(f"{mutation['id']}: snippet found {count} times in {mutation['file']}")
    ids = [m.get("id") for m in mutations]
    problems += [f"id {name!r} used twice" for name in sorted({i for i in ids if ids.count(i) > 1})]
    unknown = set(only or ()) - set(ids)
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
    # A checkout of its own: stages record the git commit they ran at, and tests check it.
    author = {"GIT_AUTHOR_NAME": "mutations", "GIT_AUTHOR_EMAIL": "mutations@localhost"}
    author |= {"GIT_COMMITTER_NAME": "mutations", "GIT_COMMITTER_EMAIL": "mutations@localhost"}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "unmutated"]):
        subprocess.run(["git", *command], cwd=dest, check=True, env={**os.environ, **author})


class Tests:
    """How the tests run: ``parts`` (pytest arguments of each, run in turn until one fails),
    ``workers`` processes, ``timeout`` (seconds per part)."""

    def __init__(self, parts: list[list[str]], workers: int, timeout: int):
        self.parts, self.workers, self.timeout = parts, workers, timeout

    def run(self, tree: Path, selection: list[str]) -> tuple[bool | None, str]:
        """(passed, the first failure or else pytest's summary line) of ``selection`` on
        ``tree``; passed is None when no test was selected."""
        parallel = ["-n", str(self.workers)] if self.workers > 1 else []
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *parallel, *NOT_RUN, *selection]  # fmt: skip
        # No bytecode: a restored file may keep the size and mtime second of its mutant.
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                                    timeout=self.timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False, f"timed out after {self.timeout} s"
        if result.returncode == NO_TESTS_COLLECTED:
            return None, "no test selected"
        lines = result.stdout.strip().splitlines() or [""]
        failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
        return result.returncode == 0, (failed or lines)[-1][:110]

    def run_parts(self, tree: Path) -> tuple[bool, str]:
        """(passed, detail) of the parts in turn, up to the first that does not pass."""
        for selection in self.parts:
            passed, detail = self.run(tree, selection)
            if passed is False:
                return False, detail
        return True, detail

    def catches(self, tree: Path, mutation: dict) -> tuple[bool, str]:
        """(caught, detail): the expected tests (with the whole suite), then the parts."""
        if mutation.get("expect") and self.parts == WHOLE_SUITE:
            passed, detail = self.run(tree, mutation["expect"])
            if passed is False and not detail.startswith("timed out"):
                return True, detail
        passed, detail = self.run_parts(tree)
        return passed is False and not detail.startswith("timed out"), detail


def try_mutation(tree: Path, mutation: dict, tests: Tests) -> tuple[bool, str]:
    """(caught, detail): apply ``mutation`` to ``tree``, run the tests, restore the file."""
    path = tree / mutation["file"]
    original = path.read_text()
    path.write_text(original.replace(mutation["find"], mutation["replace"]))
    try:
        return tests.catches(tree, mutation)
    finally:
        path.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=LIST, help="the mutations (YAML)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="mutation ids (default: all)")
    parser.add_argument("--tests", nargs="+", metavar="ARG",
                        help="pytest arguments to run instead of the whole suite (quick checks; "
                             "the score then speaks for these tests only)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist processes (-n)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per pytest run")
    args = parser.parse_args()
    mutations = load(args.list, args.only)
    tests = Tests([args.tests] if args.tests else WHOLE_SUITE, args.workers, args.timeout)
    with tempfile.TemporaryDirectory(prefix="mutations.") as scratch:
        tree = Path(scratch) / "repo"
        tracked_copy(tree)
        start = time.monotonic()
        passed, detail = tests.run_parts(tree)
        if not passed:
            print(f"error: the tests fail without any mutation: {detail}", file=sys.stderr)
            return 2
        print(f"unmutated: {detail} ({time.monotonic() - start:.0f} s)", flush=True)
        caught = 0
        for mutation in mutations:
            start = time.monotonic()
            hit, detail = try_mutation(tree, mutation, tests)
            caught += hit
            verdict = "caught" if hit else "NOT CAUGHT"
            seconds = time.monotonic() - start
            print(f"{verdict:10s} {mutation['id']:34s} {seconds:4.0f} s  {detail}", flush=True)
    print(f"mutation score: {caught}/{len(mutations)} caught")
    return 0 if caught == len(mutations) else 1


if __name__ == "__main__":
    sys.exit(main())
