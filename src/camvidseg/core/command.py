"""What every stage's command line shares: ``camvidseg <stage>`` usage and help with defaults.

Kept free of heavy imports: ``--help`` must answer before torch or matplotlib is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help where a default exists and is not said."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default in ("", [], argparse.SUPPRESS)
        if action.option_strings and not unset and "default" not in text:
            text += " (default: %(default)s)"
        return text


def parser(module_file: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of the stage defined in ``module_file`` (pass ``__file__``, ``__doc__``)."""
    return argparse.ArgumentParser(
        prog=f"camvidseg {Path(module_file).stem}",
        description=summary(doc),
        formatter_class=_HelpFormatter,
    )


def summary(doc: str | None) -> str:
    """A stage's docstring's first paragraph (its whole first sentence, however it wraps), as plain
    text without its "Stage N:" prefix or the closing period."""
    first = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    if first.endswith(".") and (first.endswith("....") or not first.endswith("...")):
        first = first[:-1]  # the closing period, never an ellipsis
    head, sep, rest = first.partition(": ")
    text = rest if sep and head.startswith("Stage ") else first
    return text[:1].upper() + text[1:]


def add_trained_model(parser: argparse.ArgumentParser, **split) -> None:
    """``--model``, ``--prepared``, ``--palette``, ``--device`` and, given its ``add_argument``
    keywords, ``--split``: the stages that run the trained model on the prepared images."""
    parser.add_argument("--model", required=True, type=Path, help="best.pth from training")
    parser.add_argument(
        "--prepared", required=True, type=Path, help="folder from the convert stage"
    )
    parser.add_argument("--palette", required=True, type=Path, help="palette.json")
    if split:
        parser.add_argument("--split", **split)
    add_device(parser)


def add_paths(parser: argparse.ArgumentParser, paths: dict[str, str]) -> None:
    """Required path options: flag -> help."""
    for flag, text in paths.items():
        parser.add_argument(flag, required=True, type=Path, help=text)


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the stages that run the trained model (the setting ``train.device``).

    By hand the default is ``auto``, not the workflow's ``cuda``: a command typed on a machine
    without a GPU must run there rather than fail once torch has loaded.
    """
    from .settings import option

    parser.add_argument("--device", **{**option("train.device"), "default": "auto"})
