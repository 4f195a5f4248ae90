"""Configuration machinery: YAML files with ``extends``, dotted overrides, typed dataclass building.

A config file may start from others with ``extends: base.yaml`` (a path relative to the file, or a
list of them; mappings are merged deeply, everything else is replaced), and the command line may
change any value with dotted overrides (``--set train.lr=0.01``; values are parsed as YAML).
:func:`build_dataclass` turns the merged mapping into a typed dataclass: unknown keys, wrong types and
out-of-range values (a section's ``problems()``) raise :class:`~histobreast.errors.ConfigError` naming
the file and the dotted key. The sections themselves live beside the code that owns them
(``data.config``, ``preprocess.config``, ``engine.config``, ``pipelines.config``).

Every JSON file histobreast reads back (model.json, ensemble.json, checkpoints, stain targets,
compression studies, dataset scales) goes through :func:`read_json`, and everything it writes as
JSON or YAML through :func:`to_jsonable`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import numpy as np
import yaml

from histobreast.atomic import atomic_write_text
from histobreast.errors import ConfigError, DatasetError, HistobreastError
from histobreast.textfiles import read_user_text

T = TypeVar("T")

Problems = Iterator[tuple[str, str]]  # (field name, message) pairs yielded by a section's ``problems()``


def load_dataclass(
    cls: type[T], path: str | Path, overrides: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> T:
    """Read ``path`` (following ``extends``), apply ``key=value`` overrides and ``defaults``, build ``cls``.

    Errors name the file and the dotted key, and say so when the key at fault came from an override.
    """
    path = Path(path)
    raw = apply_overrides(read_config_file(path), overrides, source=path)
    for key, value in (defaults or {}).items():
        raw.setdefault(key, value)
    try:
        return build_dataclass(cls, raw, source=str(path))
    except ConfigError as err:
        culprits = [item for item in overrides if item.partition("=")[0].strip() in str(err)]
        if not culprits:
            raise
        raise ConfigError(f"{err} (from the override {', '.join(map(repr, culprits))}, not the file)") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML/JSON-able data (tuples become lists)."""
    return to_jsonable(config)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved ``config`` as YAML, atomically (the run folder's ``config.yaml``)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    return atomic_write_text(path, text)


def apply_overrides(
    raw: Mapping[str, Any], overrides: Sequence[str], source: str | Path = "<config>"
) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (value parsed as YAML)."""
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{source}: override {item!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file ``path`` with its ``extends`` parents merged under it."""
    return _read_with_extends(Path(path), chain=())


def read_yaml_mapping(path: str | Path, what: str = "config file", hint: str = "") -> dict[str, Any]:
    """The top-level mapping of YAML file ``path`` (empty file: ``{}``); one-line errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found{hint}")
    try:
        raw = yaml.safe_load(read_user_text(path))  # BOMs, UTF-16 and CRLF as other editors write them
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    _refuse_self_reference(raw, path, "", set())
    return raw


def _refuse_self_reference(node: Any, path: Path, key: str, open_ids: set[int]) -> None:
    """A YAML anchor used inside itself (``a: &x [*x]``) builds a cyclic object; refuse it in one line."""
    if not isinstance(node, (dict, list)):
        return
    if id(node) in open_ids:
        raise ConfigError(f"{path}: {key or '(top level)'}: a YAML anchor refers to itself (cyclic value)")
    open_ids.add(id(node))
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for name, child in children:
        _refuse_self_reference(
            child, path, f"{key}[{name}]" if isinstance(node, list) else _join(key, str(name)), open_ids
        )
    open_ids.discard(id(node))


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: `extends` forms a cycle: {cycle}")
    raw = read_yaml_mapping(path, hint=f" (extended from {chain[-1]})" if chain else "")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: extends: must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _deep_merge(merged, _read_with_extends(path.parent / parent, (*chain, resolved)))
    return _deep_merge(merged, raw)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def read_json(
    path: str | Path,
    what: str,
    *,
    error: type[HistobreastError] = ConfigError,
    format: str | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """The JSON object in file ``path``, a ``what`` (e.g. "checkpoint"), by one policy for every histobreast file.

    ``error`` (one line, naming the file) when it is missing, unreadable or not an object; with
    ``format``, when its ``"format"`` differs; with ``version``, when its ``"version"`` is newer
    than this histobreast reads (older files and files without one are read: readers keep
    understanding the layouts they wrote).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a spreadsheet-style BOM is not an error
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not a readable {what} JSON ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} file must hold a JSON object, got {_describe(data)}")
    if format is not None and data.get("format") != format:
        raise error(f'{path}: not a histobreast {what} (expected "format": "{format}", got {data.get("format")!r})')
    if version is not None:
        found = data.get("version", 0)
        if isinstance(found, bool) or not isinstance(found, int):
            raise error(f"{path}: 'version' must be an integer, got {found!r}")
        if found > version:
            raise error(f"{path}: {what} version {found} is newer than this histobreast reads ({version}); update it")
    return data


def to_jsonable(obj: Any) -> Any:
    """Plain JSON/YAML data: dataclasses become mappings (string keys), tuples and arrays lists,
    numpy scalars and paths Python values, NaN/inf ``null``; anything else is returned as it is."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# The generic validator: mapping -> dataclass, by the dataclass's type hints.
# ---------------------------------------------------------------------------------------------


def build_dataclass(cls: type[T], mapping: Any, source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``, checking keys, types and each ``problems()``.

    Supports bool/int/float/str, ``None`` unions, ``Literal``, ``list[T]``, ``tuple[...]``,
    ``dict[str, T]``, ``Any`` and nested dataclasses. ``ConfigError`` messages read
    ``"<source>: <prefix.key>: <problem>"``. A class may define ``derived_defaults(mapping)`` to
    give a missing key a default taken from its siblings (e.g. KREM's crop size from the input size).
    """
    where = prefix or "(top level)"
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {_describe(mapping)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = unknown_keys_message(mapping, fields, prefix)
    if unknown:
        raise ConfigError(f"{source}: {unknown}")
    derive = getattr(cls, "derived_defaults", None)
    if derive is not None:
        mapping = derive(mapping)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in mapping:
            values[name] = _convert(hints[name], mapping[name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: {key}: required key is missing")
    try:
        obj = cls(**values)
    except ConfigError as err:  # a class that checks itself on construction (e.g. KremParams)
        raise ConfigError(f"{source}: {where}: {err}") from None
    check = getattr(obj, "problems", None)
    if check is not None:
        for name, message in check():
            raise ConfigError(f"{source}: {_join(prefix, name)}: {message}")
    return obj


def rebuild_dataclass(section: T, changes: Mapping[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """A copy of config dataclass ``section`` with ``changes`` applied, validated like a loaded one."""
    return build_dataclass(type(section), {**config_to_dict(section), **changes}, source, prefix)


def unknown_keys_message(keys: Iterable[Any], allowed: Iterable[str], prefix: str = "") -> str | None:
    """``"unknown key(s) a.b (did you mean a.c?); allowed here: ..."`` for ``keys`` not in ``allowed``."""
    allowed = list(allowed)
    messages = []
    for key in (str(k) for k in keys):
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            messages.append(_join(prefix, key) + (f" (did you mean {_join(prefix, close[0])}?)" if close else ""))
    if not messages:
        return None
    return f"unknown key(s) {', '.join(messages)}; allowed here: {', '.join(allowed)}"


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted (int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, source, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value, source, key)
            except ConfigError as err:
                # A single structured option (section, list, mapping) has the more precise message.
                if len(options) == 1 and (dataclasses.is_dataclass(option) or typing.get_origin(option)):
                    raise err
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    elif origin is dict:
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{source}: {key}: keys must be strings, got {k!r}")
                out[k] = _convert(args[1], v, source, f"{key}.{k}")
            return out
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {_describe(value)}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
