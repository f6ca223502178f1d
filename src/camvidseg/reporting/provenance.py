"""What made each result (``results/provenance.json``), and which results are stale now.

``record`` (the workflow's last rule) walks back from the final outputs through Snakemake's own
record of each output (``.snakemake/metadata``: rule, exact command, inputs, start and end time) and
adds what Snakemake does not keep: the content identity of every input and output (sha256; for a
folder, a hash of its files' paths, sizes and mtimes), the stage's code file by file (its import
closure), the dataset's identity, package versions and the git commit. A stage that did not run
again keeps the environment it was made in from the previous record.

Without a subcommand it checks that record against the files as they are now and runs nothing: a
stage is stale when its code, an input or an output changed, or when a stage before it is stale.
Changed settings are not checked here (``snakemake -n`` shows what they re-run). Run it in the
folder the workflow ran in. Exit status: 0 all fresh, 1 something is stale, 2 no usable record.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, write_json
from ..data.identity import CACHE_ENV, CACHE_FILE, HashCache, content_id
from ..workflow import codegraph
from . import pages

METADATA = Path(".snakemake/metadata")  # Snakemake's record of each output (file persistence)
# The rule's own output is deleted before it runs again; this copy remembers the last record.
PREVIOUS = Path(".snakemake/camvidseg/provenance.json")
# The project's own pins (the one place they live); each job's record gives the installed version.
REQUIREMENTS = codegraph.PACKAGE_DIR.parents[1] / "requirements.txt"
# The stage a job runs: the last one in its command (``camvidseg lease ... -- python -m camvidseg
# train`` picks GPUs, then runs the stage; the rule declares the stage's closure).
STAGE_IN_COMMAND = re.compile(r"-m camvidseg (\w+)")
SHELL_SYNTAX = {">", ">>", "2>&1", "|", "&&", ";", "<"}
HTML_COLUMNS = ("stage", "finished (UTC)", "inputs", "params", "code", "git", "packages")


def snakemake_records(root: Path = METADATA) -> dict[str, dict]:
    """Output path -> Snakemake's record of it (the file name is the path in urlsafe base64, split
    into ``@``-prefixed folders where it is longer than a file name may be)."""
    records = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if path.is_file():
            encoded = "".join(p.removeprefix("@") for p in path.relative_to(root).parts)
            try:
                records[base64.urlsafe_b64decode(encoded).decode()] = json.loads(path.read_text())
            except ValueError:
                continue  # being written right now, or not one of Snakemake's records
    return records


def group_jobs(records: dict[str, dict]) -> dict[tuple, dict]:
    """Outputs recorded with the same rule and command were made by one job."""
    jobs: dict[tuple, dict] = {}
    for output, record in sorted(records.items()):
        if record.get("incomplete") or not os.path.exists(output):
            continue
        job = jobs.setdefault((record["rule"], record.get("shellcmd") or ""), {"outputs": []})
        job["outputs"].append(output)
        job["record"] = record
    return jobs


def reachable(jobs: dict[tuple, dict], targets: list[str]) -> list[tuple]:
    """The jobs that made ``targets`` and everything they were made from, upstream first."""
    maker = {out: key for key, job in jobs.items() for out in job["outputs"]}
    order: list[tuple] = []

    def visit(key: tuple) -> None:
        if key not in order:
            for path in jobs[key]["record"].get("input", []):
                if maker.get(path, key) != key:
                    visit(maker[path])
            order.append(key)

    for target in targets:
        if target in maker:
            visit(maker[target])
    return order


def job_names(order: list[tuple], jobs: dict[tuple, dict]) -> dict[tuple, str]:
    """The rule's name, with the first output where one rule made several jobs (evaluate)."""
    rules = [key[0] for key in order]
    return {
        key: key[0] if rules.count(key[0]) == 1 else f"{key[0]}:{jobs[key]['outputs'][0]}"
        for key in order
    }


def command_params(command: str) -> dict:
    """``--flag value`` pairs of the stage's part of a command (after a wrapper such as
    ``camvidseg lease ... --``, up to the redirections), JSON values decoded."""
    tokens = shlex.split(command)
    starts = [i for i in range(2, len(tokens)) if tokens[i - 2 : i] == ["-m", "camvidseg"]]
    params: dict = {}
    flag = None
    for token in tokens[starts[-1] + 1 if starts else 0 :]:
        if token in SHELL_SYNTAX:
            break
        if token.startswith("--"):
            flag = token[2:]
            params[flag] = True
        elif flag is not None:
            value = json.loads(token) if token.startswith("{") else token
            before = params[flag]
            params[flag] = value if before is True else [*_listed(before), value]
    return params


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def hashes(paths: list[str], cache: HashCache) -> dict[str, str | None]:
    return {p: content_id(p, cache) if os.path.exists(p) else None for p in paths}


def code_identity(paths: list[str], checksums: dict[str, str], cache: HashCache) -> dict:
    """sha256 per module of the stage's code as the job read it (Snakemake's checksum of its
    inputs at the time), and one hash over them all."""
    files = {codegraph.name_of(p): checksums.get(p) or content_id(p, cache) for p in sorted(paths)}
    return {"files": files, "hash": _text_sha256(json.dumps(files, sort_keys=True).encode())}


def stage_entry(job: dict, cache: HashCache) -> dict:
    """One job: what it ran, on what, with which code; ``after`` is filled in by the caller."""
    record = job["record"]
    command = record.get("shellcmd") or ""
    stages = STAGE_IN_COMMAND.findall(command)
    package = codegraph.PACKAGE_DIR
    code = [p for p in record.get("input", []) if Path(p).resolve().is_relative_to(package)]
    return {
        "rule": record["rule"],
        "module": stages[-1] if stages else None,
        "params": command_params(command),
        "command": command,
        "inputs": hashes([p for p in record.get("input", []) if p not in code], cache),
        "outputs": hashes(job["outputs"], cache),
        "code": code_identity(code, record.get("input_checksums") or {}, cache),
        "started": _iso(record.get("starttime")),
        "finished": _iso(record.get("endtime")),
        # The rule's conda environment file (what the job ran in with --sdm conda).
        "conda_env_file": _text_sha256(base64.b64decode(record["conda_env"]))
        if record.get("conda_env")
        else None,
    }


def _text_sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def pinned_packages() -> list[str]:
    """Distribution names pinned in requirements.txt (none where the package runs installed)."""
    lines = REQUIREMENTS.read_text().splitlines() if REQUIREMENTS.is_file() else []
    return [line.split("==")[0].strip() for line in lines if "==" in line.split("#")[0]]


def environment() -> dict:
    """Interpreter, installed versions of the pinned packages and git state, as they are now."""
    packages = {}
    for name in pinned_packages():
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "packages": packages, "git": git_state()}


def git_state() -> dict | None:
    root = codegraph.PACKAGE_DIR.parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        if run.returncode:
            raise OSError(run.stderr.strip())
        return run.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except OSError:
        return None  # not a git checkout (an unpacked release), or no git


def build_record(targets: list[str], previous: dict, cache: HashCache) -> dict:
    jobs = group_jobs(snakemake_records())
    order = reachable(jobs, targets)
    names = job_names(order, jobs)
    maker = {out: names[key] for key in order for out in jobs[key]["outputs"]}
    now, stages, dataset = environment(), {}, None
    for key in order:
        entry = stage_entry(jobs[key], cache)
        entry["after"] = sorted({maker[p] for p in entry["inputs"] if p in maker})
        old = previous.get("stages", {}).get(names[key], {})
        unchanged = (old.get("outputs"), old.get("finished")) == (
            entry["outputs"],
            entry["finished"],
        )
        entry["environment"] = old["environment"] if unchanged else now
        manifest = next((p for p in entry["outputs"] if p.endswith("dataset.json")), None)
        if manifest:
            dataset = read_json(manifest).get("content_id")
        if manifest or any(stages[up].get("dataset") for up in entry["after"]):
            entry["dataset"] = dataset
        stages[names[key]] = entry
    made = _iso(datetime.datetime.now(datetime.timezone.utc).timestamp())
    return {"made": made, "targets": targets, "dataset": dataset, "stages": stages}


def code_changes(entry: dict, cache: HashCache) -> list[str]:
    recorded = entry["code"]["files"]
    names = codegraph.closure(entry["module"]) if entry["module"] else list(recorded)
    files = {m: codegraph.path_of(m) for m in names}
    now = {m: content_id(path, cache) for m, path in files.items() if path.exists()}
    both = sorted(now.keys() & recorded.keys())
    package = codegraph.PACKAGE_DIR
    shown = {m: str(codegraph.path_of(m).relative_to(package)) for m in now | recorded}
    reasons = [f"code changed: {shown[m]}" for m in both if now[m] != recorded[m]]
    reasons += [f"code now imports {shown[m]}" for m in sorted(now.keys() - recorded.keys())]
    reasons += [f"code no longer uses {shown[m]}" for m in sorted(recorded.keys() - now.keys())]
    return reasons


def content_changes(recorded: dict[str, str | None], what: str, cache: HashCache) -> list[str]:
    reasons = []
    for path, identity in recorded.items():
        if not os.path.exists(path):
            reasons.append(f"{what} missing: {path}")
        elif content_id(path, cache) != identity:
            reasons.append(f"{what} changed: {path}")
    return reasons


def stale_stages(record: dict, cache: HashCache) -> dict[str, list[str]]:
    """Stage -> why it would be made again; stages are listed upstream first in the record."""
    stale: dict[str, list[str]] = {}
    for name, entry in record["stages"].items():
        reasons = code_changes(entry, cache)
        reasons += content_changes(entry["inputs"], "input", cache)
        reasons += content_changes(entry["outputs"], "output", cache)
        reasons += [f"comes after stale {up}" for up in entry["after"] if up in stale]
        if reasons:
            stale[name] = reasons
    return stale


def render_html(record: dict) -> str:
    """A self-contained page for the Snakemake report: one table row per stage."""
    rows = []
    for name, entry in record["stages"].items():
        env = entry["environment"]
        git = env["git"] or {}
        rows.append([
            name,
            entry["finished"] or "",
            [f"{p}: {h}" for p, h in entry["inputs"].items()],
            [f"--{k} {v}" for k, v in entry["params"].items()],
            entry["code"]["hash"],
            f"{git.get('commit', 'no git')}{' (dirty)' if git.get('dirty') else ''}",
            [f"{k} {v}" for k, v in env["packages"].items() if v],
        ])  # fmt: skip
    made = f"record made {record['made']}; dataset {record['dataset']}"
    body = (
        pages.heading("Provenance", 1)
        + pages.paragraph(made)
        + pages.table("provenance", HTML_COLUMNS, rows)
    )
    style = "td,th{font-size:12px;text-align:left;vertical-align:top;word-break:break-all}"
    return pages.document("Provenance", body, style)


def record_command(args: argparse.Namespace, cache: HashCache) -> None:
    previous = read_json(PREVIOUS) if PREVIOUS.is_file() else {}
    record = build_record(args.targets, previous, cache)
    made = {output for entry in record["stages"].values() for output in entry["outputs"]}
    # No Snakemake record (--drop-metadata, another persistence backend): say so, keep the hash.
    record["unrecorded"] = hashes(sorted(set(args.targets) - made), cache)
    for path in record["unrecorded"]:
        print(f"warning: {path}: Snakemake kept no record of the job that made it")
    write_json(args.record, record)
    write_json(PREVIOUS, record)
    if args.html:
        with atomic_path(args.html) as tmp:
            tmp.write_text(render_html(record))
    print(f"recorded {len(record['stages'])} stages in {args.record}")


def check_command(args: argparse.Namespace, cache: HashCache) -> None:
    try:
        record = read_json(args.record)
    except (OSError, ValueError) as err:
        raise UserError(
            f"{args.record}: no readable provenance record ({err.__class__.__name__});"
            " run the workflow first"
        ) from None
    stale = stale_stages(record, cache)
    for path in record.get("unrecorded", {}):
        print(f"unknown  {path} (no record of what made it)")
    for name in record["stages"]:
        print(f"{'stale' if name in stale else 'fresh'}  {name}")
        for reason in stale.get(name, []):
            print(f"       {reason}")
    print(f"{len(stale)} of {len(record['stages'])} stages stale (record of {record['made']})")
    if stale:
        raise SystemExit(1)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.epilog = "exit status: 0 all fresh, 1 something is stale, 2 no usable record"
    parser.add_argument(
        "action",
        nargs="?",
        choices=["check", "record"],
        default="check",
        help="check: list stale stages and why, running nothing; record: write the record",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=Path("results/provenance.json"),
        help="the record to check, or to write (record)",
    )
    parser.add_argument("--targets", nargs="+", default=[], help="record: the final outputs")
    parser.add_argument("--html", type=Path, help="record: also write a readable page here")
    args = parser.parse_args(argv)
    cache = HashCache(os.environ.get(CACHE_ENV, CACHE_FILE))
    try:
        (record_command if args.action == "record" else check_command)(args, cache)
    finally:
        cache.save()


if __name__ == "__main__":
    main()
