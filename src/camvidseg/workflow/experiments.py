"""Experiments: named variants of the model, train and eval settings over one prepared dataset.

The config's ``experiments:`` maps a name to overrides; ``sweep:`` is a grid expanded here into
more named experiments. Each experiment's settings are the base config's sections with its
overrides on top, so the workflow hands every job one complete, resolved settings object.
"""

from __future__ import annotations

import itertools
import re

from ..core.errors import UserError

SECTIONS = ("model", "train", "eval")  # what an experiment may override
# The leaderboard compares every experiment on the same splits; the cluster layout of a training
# job (its SLURM nodes) is decided once for the workflow.
SAME_FOR_ALL = ("eval.splits", "train.nodes")
UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")  # characters a value may not bring into a folder name


def collect(config: dict) -> dict[str, dict]:
    """Name -> overrides, from ``experiments:`` and the expanded ``sweep:``, in config order."""
    named = dict(config.get("experiments") or {})
    for name, overrides in expand_sweep(config.get("sweep") or {}).items():
        if name in named:
            raise UserError(f"experiments.{name}: also made by sweep; rename the experiment")
        named[name] = overrides
    for name, overrides in named.items():
        for dotted in SAME_FOR_ALL:
            section, key = dotted.split(".")
            if key in (overrides.get(section) or {}):
                raise UserError(
                    f"experiments.{name}.{dotted}: must be the same for every experiment;"
                    f" set {dotted} at the top level"
                )
    return named


def expand_sweep(sweep: dict[str, list]) -> dict[str, dict]:
    """Every combination of the grid as ``{name: overrides}``; names list the swept values.

    A name depends only on its own values, so adding a value to the grid keeps the other
    experiments' names (and their cached results).
    """
    if not sweep:
        return {}
    keys = list(sweep)
    labels = [key_label(key) for key in keys]
    if len(set(labels)) < len(labels):  # e.g. the same setting name in two sections
        labels = keys
    experiments: dict[str, dict] = {}
    for values in itertools.product(*(sweep[key] for key in keys)):
        pairs = zip(labels, values, strict=True)
        name = ",".join(f"{label}={value_label(value)}" for label, value in pairs)
        if name in experiments:
            raise UserError(f"sweep: two combinations are both named {name!r}; use distinct values")
        overrides: dict = {}
        for key, value in zip(keys, values, strict=True):
            overrides = merged(overrides, nested(key, value))
        experiments[name] = overrides
    return experiments


def nested(dotted: str, value) -> dict:
    """``("eval.tta.flip", True)`` -> ``{"eval": {"tta": {"flip": True}}}``."""
    for key in reversed(dotted.split(".")):
        value = {key: value}
    return value


def key_label(dotted: str) -> str:
    """``train.lr`` -> ``lr``; ``model.name`` -> ``model`` (``name`` alone says nothing)."""
    parts = dotted.split(".")
    return parts[-2] if parts[-1] == "name" else parts[-1]


def value_label(value) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = "x".join(value_label(v) for v in value)
    else:
        text = repr(value) if isinstance(value, float) else str(value)
    return UNSAFE.sub("-", text)


def resolve(config: dict, overrides: dict) -> dict:
    """The complete model/train/eval settings of one experiment (base config + overrides)."""
    return {s: merged(config[s], overrides.get(s) or {}) for s in SECTIONS}


def merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested sections (e.g. ``eval.tta``) merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both else value
    return out


def flatten(settings: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1}, "eval": {"tta": {"flip": 0}}}`` -> ``{"train.lr": 1,
    "eval.tta.flip": 0}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing(settings_by_name: dict[str, dict]) -> list[str]:
    """Dotted settings whose values are not the same in every experiment, in schema order."""
    flat = [flatten(s) for s in settings_by_name.values()]
    if not flat:
        return []
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
