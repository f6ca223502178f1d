"""What made each result (``results/provenance.json``), and which results are stale now.

``record`` (the workflow's last rule) walks back from the final outputs through the records the
stages wrote beside their outputs (``madeby``: stage, settings, the content identity of every input
and output, the code file by file, package versions, git commit and times) and puts them together,
upstream first, each with the stages it came after and the dataset's identity.

Without a subcommand it checks that record against the files as they are now and runs nothing: a
stage is stale when its code, an input or an output changed, or when a stage before it is stale.
Changed settings are not checked here (``snakemake -n`` shows what they re-run). Run it in the
folder the workflow ran in. Exit status: 0 all fresh, 1 something is stale, 2 no usable record.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, read_json, write_json
from ..data.identity import CACHE_ENV, CACHE_FILE, HashCache, content_id, redact_secrets
from ..workflow import codegraph
from ..workflow.experiments import flatten
from ..workflow.madeby import identities, read_record
from . import pages

HTML_COLUMNS = ("stage", "finished (UTC)", "inputs", "settings", "code", "git")


def stage_records(targets: list[str]) -> list[dict]:
    """The records of the jobs that made ``targets`` and everything they were made from,
    upstream first; one job made all the outputs its record lists."""
    order: list[dict] = []
    done: set[tuple] = set()

    def visit(path: str) -> None:
        record = read_record(path)
        key = record and (record["stage"], tuple(sorted(record["outputs"])))
        if not record or key in done:
            return
        done.add(key)
        for source in record["inputs"]:
            visit(source)
        order.append(record)

    for target in targets:
        visit(target)
    return order


def job_names(records: list[dict]) -> list[str]:
    """The stage's name, with its first output where one stage made several jobs (evaluate)."""
    stages = [r["stage"] for r in records]
    return [
        r["stage"] if stages.count(r["stage"]) == 1 else f"{r['stage']}:{min(r['outputs'])}"
        for r in records
    ]


def build_record(targets: list[str]) -> dict:
    records = stage_records(targets)
    names = job_names(records)
    maker = {out: name for name, r in zip(names, records, strict=True) for out in r["outputs"]}
    stages, dataset = {}, None
    for name, entry in zip(names, records, strict=True):
        entry["after"] = sorted({maker[p] for p in entry["inputs"] if p in maker})
        manifest = next((p for p in entry["outputs"] if p.endswith("dataset.json")), None)
        if manifest:
            dataset = read_json(manifest).get("content_id")
        if manifest or any(stages[up].get("dataset") for up in entry["after"]):
            entry["dataset"] = dataset
        stages[name] = entry
    made = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"made": made, "targets": targets, "dataset": dataset, "stages": stages}


def code_changes(entry: dict, cache: HashCache) -> list[str]:
    recorded = entry["code"]["files"]
    files = {m: codegraph.path_of(m) for m in codegraph.closure(entry["stage"])}
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
            if identity is not None:  # absent then too (an optional input): nothing changed
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


def short(identity: str | None) -> str:
    """A content identity as people compare them by eye: ``sha256:`` and 12 hex digits (the
    record holds the whole)."""
    return "absent" if identity is None else identity[:19]


def setting_lines(settings: dict) -> list[str]:
    """``key: value`` per setting that is set; a JSON setting (training's ``--settings``) one line
    per dotted key, so that it reads as a list rather than one unbreakable string."""
    flat = {}
    for key, value in settings.items():
        nested = None
        if isinstance(value, str) and value.startswith("{"):
            with contextlib.suppress(ValueError):
                nested = json.loads(value)
        flat |= flatten(nested) if isinstance(nested, dict) else {key: value}
    return [
        f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in flat.items()
        if value not in (None, [], "")
    ]


def package_rows(stages: dict) -> list[list]:
    """Each package once with its version; where stages ran with different versions (another
    environment), which stages had which."""
    versions: dict[str, dict[str, list[str]]] = {}
    for name, entry in stages.items():
        for package, version in entry["environment"]["packages"].items():
            if version:
                versions.setdefault(package, {}).setdefault(version, []).append(name)
    rows = []
    for package, found in sorted(versions.items()):
        if len(found) == 1:
            rows.append([package, next(iter(found))])
        else:
            rows.append([package, [f"{v} ({', '.join(names)})" for v, names in found.items()]])
    return rows


def render_html(record: dict) -> str:
    """A self-contained page for the Snakemake report: one table row per stage, then the
    packages once."""
    rows = []
    for name, entry in record["stages"].items():
        git = entry["environment"]["git"] or {}
        commit = git.get("commit", "no git")[:12]
        rows.append([
            name.replace(":", ": "),  # evaluate: results/metrics/val.json may wrap
            entry["finished"] or "",
            [f"{p}: {short(h)}" for p, h in entry["inputs"].items()],
            setting_lines(entry["settings"]),
            short(entry["code"]["hash"]),
            f"{commit}{' (dirty)' if git.get('dirty') else ''}",
        ])  # fmt: skip
    made = f"record made {record['made']}; dataset {record['dataset']}"
    body = (
        pages.heading("Provenance", 1)
        + pages.paragraph(made)
        + pages.table("provenance", HTML_COLUMNS, rows)
        + pages.heading("Packages")
        + pages.table("packages", ("package", "version"), package_rows(record["stages"]))
        + pages.paragraph("Identities are shortened here; results/provenance.json has them whole.")
    )
    # Header words and short cells (time, code, git) never break; stage names wrap at spaces,
    # paths and settings anywhere, so that no column is squeezed to a letter.
    style = (
        "td,th{font-size:12px;text-align:left;vertical-align:top;white-space:nowrap}"
        "td:first-child{white-space:normal;min-width:8em}"
        "td:nth-child(3),td:nth-child(4){white-space:normal;overflow-wrap:anywhere;min-width:18em}"
    )
    return pages.document("Provenance", body, style)


def record_command(args: argparse.Namespace, cache: HashCache) -> None:
    record = redact_secrets(build_record(args.targets))
    made = {output for entry in record["stages"].values() for output in entry["outputs"]}
    # A target whose stage wrote no record (made by hand, or by an older version): say so.
    record["unrecorded"] = identities(sorted(set(args.targets) - made), cache)
    for path in record["unrecorded"]:
        print(f"warning: {path}: no record of the stage that made it")
    write_json(args.record, record)
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
