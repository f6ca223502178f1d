"""The one definition of every setting: ``config.schema.yaml`` (type, default, description).

The Snakefile validates the user's config against it; each stage's CLI takes its defaults and
help texts from it; the training fingerprint is computed over the settings it marks as changing
the result (a property with ``x-run-only: true``, such as the log interval, does not).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import operator
from pathlib import Path

import yaml

from .errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config.schema.yaml"


@functools.cache
def schema() -> dict:
    # libyaml's loader where PyYAML has it: every stage and workflow start reads the schema
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _node(dotted: str) -> dict:
    node = schema()
    for key in dotted.split("."):
        try:
            node = node["properties"][key]
        except KeyError:
            raise KeyError(f"no setting {dotted!r} in {SCHEMA_PATH.name}") from None
    return node


def node(dotted: str = "") -> dict:
    """The schema of one setting or section (``""`` for the whole config), references followed."""
    return _deref(_node(dotted) if dotted else schema())


def _deref(node: dict) -> dict:
    """Follow a local ``$ref`` such as ``#/properties/train``."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def coerce(value, node_schema: dict):
    """``value`` with strings typed as its schema says, in nested sections and lists too.

    ``--config train="{crop_size: [96, 128]}"`` arrives as strings, and YAML 1.1 reads
    ``1e-3`` (no dot) as a string; anything that does not parse is left for validation to refuse.
    """
    node_schema = _deref(node_schema)
    if isinstance(value, dict):
        properties = node_schema.get("properties", {})
        extra = node_schema.get("additionalProperties")
        fallback = extra if isinstance(extra, dict) else {}
        return {k: coerce(v, properties.get(k, fallback)) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(item, node_schema.get("items", {})) for item in value]
    if isinstance(value, str) and node_schema.get("type") in ("number", "integer", "boolean"):
        return _typed(value, node_schema["type"])
    return value


def _typed(text: str, kind: str):
    typed = yaml.safe_load(text) if text.strip() else text
    if isinstance(typed, str) and kind == "number":
        try:
            return float(text)  # 1e-3, which YAML 1.1 does not read as a number
        except ValueError:
            return text
    return text if isinstance(typed, str) else typed


def default(dotted: str):
    """Default of one setting, e.g. ``default("train.lr")``."""
    return _node(dotted).get("default")


def describe(dotted: str) -> str:
    """The schema's description of a setting (for ``--help``); empty when it has none."""
    return _node(dotted).get("description", "")


def finite_float(text: str) -> float:
    """A command line's number: NaN and infinity pass every range check and break a stage."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


# A config holds a few hundred values. YAML aliases can make a file of a few lines expand to
# billions of them ("billion laughs") or hold itself: every walk of it would then not end.
MAX_CONFIG_VALUES = 100_000


def refuse_alias_bombs(config: dict) -> None:
    """Refuse a config that holds itself or expands past MAX_CONFIG_VALUES, before anything
    walks it."""
    count, stack = 0, [(config, "", ())]
    while stack:
        value, where, above = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise UserError(
                f"invalid config: more than {MAX_CONFIG_VALUES} values (YAML aliases that expand?)"
            )
        if not isinstance(value, dict | list):
            continue
        if id(value) in above:
            raise UserError(f"invalid config: {where}: a YAML alias that holds itself")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            stack.append((item, f"{where}.{key}" if where else str(key), (*above, id(value))))


def refuse_non_finite(value, where: str) -> None:
    """Refuse NaN and infinity anywhere in ``value`` (YAML's ``.nan``, ``.inf``; JSON's ``NaN``):
    JSON Schema's ranges let them through (every comparison with NaN is false)."""
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for item in value:
            refuse_non_finite(item, where)
    elif isinstance(value, float) and not math.isfinite(value):
        spelled = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
        raise UserError(f"{where}: {spelled} is not a finite number")


_ARG_TYPES = {"integer": int, "number": finite_float, "string": str}
# A schema's range keywords: (holds for the value and the limit, how an error words it)
_RANGES = {
    "minimum": (operator.ge, "at least"),
    "maximum": (operator.le, "at most"),
    "exclusiveMinimum": (operator.gt, "above"),
}


def _argument_type(node: dict):
    """The command-line parser of a value of this schema: its type, and its range where it has
    one (the workflow's config check refuses ``--width 3``; a stage run by hand must too)."""
    parse = _ARG_TYPES[node.get("type", "string")]
    bounds = [(*_RANGES[key], node[key]) for key in _RANGES if key in node]
    if not bounds:
        return parse

    def in_range(text: str):
        value = parse(text)
        for holds, words, limit in bounds:
            if not holds(value, limit):
                raise argparse.ArgumentTypeError(f"{text} is not {words} {limit}")
        return value

    in_range.__name__ = parse.__name__  # argparse names it in "invalid int value: 'x'"
    return in_range


# A command line's count of threads or processes: 0 or fewer would start no worker.
positive_int = _argument_type({"type": "integer", "minimum": 1})


def option(dotted: str) -> dict:
    """``argparse`` keywords for the command-line twin of a setting: its schema default, help
    text, choices and range, so a CLI never re-declares them
    (``add_argument("--lr", **option(...))``)."""
    node = _node(dotted)
    keywords = {"default": node.get("default"), "help": node.get("description", "")}
    if "enum" in node:
        keywords["choices"] = node["enum"]
    elif node.get("type") == "boolean":
        keywords["action"] = argparse.BooleanOptionalAction
    elif node.get("type") == "array":
        items = node.get("items", {})
        fixed = node.get("minItems") == node.get("maxItems")
        keywords["nargs"] = node["minItems"] if fixed and "minItems" in node else "*"
        keywords["choices"] = items.get("enum")
        keywords["type"] = _argument_type(items)
    else:
        keywords["type"] = _argument_type(node)
    return {key: value for key, value in keywords.items() if value is not None}


def resolve(section: str, values: object = None) -> dict:
    """``values`` of one config section over the schema's defaults, refusing unknown keys."""
    properties = _node(section)["properties"]
    if not isinstance(values, dict | None):
        raise UserError(f"{section}: expected a mapping of settings, not {json.dumps(values)}")
    values = dict(values or {})
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise UserError(f"{section}: unknown setting(s) {', '.join(unknown)}")
    refuse_non_finite(values, section)
    resolved = {key: values.get(key, node.get("default")) for key, node in properties.items()}
    # As the workflow's config check would: a stage run by hand gets these from a JSON text.
    error = schema_violation({section: resolved})
    if error is not None:
        raise UserError(f"{violation_key(error)}: {error.message}")
    return resolved


def schema_violation(config: dict):
    """The schema's objection to ``config`` (a whole config or some of its sections) that
    jsonschema finds most relevant, or None."""
    import jsonschema  # ~80 ms: only the workflow's parse and the stages taking settings pay it

    validator = jsonschema.Draft202012Validator(schema())
    return jsonschema.exceptions.best_match(validator.iter_errors(config))


def violation_key(error) -> str:
    """The dotted key a schema violation is about (``train.crop_size.0``)."""
    return ".".join(str(part) for part in error.absolute_path)


def result_settings(section: str, values: dict) -> dict:
    """The settings of ``section`` that change what a stage produces (drops ``x-run-only``)."""
    properties = _node(section)["properties"]
    return {k: v for k, v in values.items() if not properties.get(k, {}).get("x-run-only")}


def digest(*parts: object) -> str:
    """Short, stable hash of JSON-able parts (dict key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
