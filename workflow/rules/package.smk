# Where the camvidseg package is, for the parse and for every job (common.smk puts it first on
# the path): found from the workflow's own files, so the workflow also runs as a deployed module.
import contextlib
import io
import os
import shutil
import subprocess
import tarfile


def package_folder():
    """src/ of the checkout these rule files come from, found from them, never from the working
    folder: beside them when Snakemake reads them as local files; when it reads them from git
    (the workflow deployed as a module by git URL), the package of that same commit, unpacked
    once under .snakemake/camvidseg-src/."""
    here = workflow.current_basedir
    if isinstance(here, os.PathLike):
        return os.path.normpath(os.path.join(here, "..", "..", "src"))
    repo = getattr(here, "repo_path", None) or here.hosted_repo.repo_clone
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{here.ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = os.path.abspath(f".snakemake/camvidseg-src/{commit}")
    if not os.path.isdir(folder):
        tmp = f"{folder}.{os.getpid()}"  # parallel parses race: each unpacks its own, one wins
        os.makedirs(tmp)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "src"],
            capture_output=True,
            check=True,
        ).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(tmp, filter="data")
        with contextlib.suppress(OSError):  # another parse got there first
            os.rename(tmp, folder)
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(folder, "src")


SRC = package_folder()
