"""The workflow deployed as a Snakemake module, as `snakedeploy deploy-workflow` writes it: a
folder of its own with a config and a Snakefile that takes every rule from this repository's
`workflow/Snakefile` at a git tag, run with no PYTHONPATH, no checkout and no package on its path.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY, sources_stable

# What snakedeploy writes, its github(...) replaced by gitfile(...): a local repository.
DEPLOYING_SNAKEFILE = """\
configfile: "config/config.yaml"


module camvidseg:
    snakefile:
        gitfile("{repo}", path="workflow/Snakefile", tag="v-test")
    config:
        config


use rule * from camvidseg
"""


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """This checkout's files (committed or not) as a git repository with a tag."""
    repo = tmp_path_factory.mktemp("published") / "camvid-seg"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    with sources_stable():
        for name in filter(None, files):
            if (REPO / name).is_file() and not (REPO / name).is_symlink():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, repo / name)
            elif (REPO / name).is_symlink():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                (repo / name).symlink_to(os.readlink(REPO / name))
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "published", cwd=repo)
    git("tag", "v-test", cwd=repo)
    return repo


@pytest.mark.slow
def test_deployed_as_a_module_from_git_runs_the_demo_in_another_folder(published, tmp_path):
    deployment = tmp_path / "my-analysis"
    (deployment / "config").mkdir(parents=True)
    shutil.copy(TINY, deployment / "config/config.yaml")
    (deployment / "Snakefile").write_text(DEPLOYING_SNAKEFILE.format(repo=published))
    # Rules call `python`: this interpreter, as an activated venv would give; nothing points at
    # a checkout (no PYTHONPATH), and the interpreter's own camvidseg, if any, is not this one.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=deployment,
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps (100%) done" in result.stderr
    scores = json.loads((deployment / "results/metrics/test.json").read_text())
    assert 0 <= scores["mIoU"] <= 1
    assert (deployment / "results/model/best.pth").is_file()
    # The jobs ran the published package, unpacked from the tagged commit, not any other copy.
    unpacked = list((deployment / ".snakemake/camvidseg-src").glob("*/src/camvidseg/__init__.py"))
    assert len(unpacked) == 1
    log = (deployment / "results/logs/train.log").read_text()
    assert str(REPO) not in log
