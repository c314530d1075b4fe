"""Typed, frozen config dataclasses with a strict ``from_dict``.

``from_dict`` refuses unknown keys and wrong types, naming the dotted key, so a bad experiment
YAML is refused before anything runs (``ConfigError: experiment.tasks[1].kind: ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class UserError(Exception):
    """A mistake in what the user gave (a file, a folder, an option), not a bug: the command line
    shows it as one line ``error: <message>`` and exits with status 2, without a traceback."""


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown, of the wrong type or impossible; names the key (and,
    once known, the file: ``str(err)`` is ``<file>: <key>: <reason>``)."""

    def __init__(self, key: str, reason: str, file: str | None = None) -> None:
        super().__init__(": ".join(part for part in (file, key, reason) if part))
        self.key = key
        self.reason = reason
        self.file = file

    def in_file(self, file: str | Path) -> ConfigError:
        """This error, naming ``file`` unless it already names one (e.g. a base file's)."""
        return self if self.file is not None else ConfigError(self.key, self.reason, str(file))


def did_you_mean(value: Any, known: Any) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``value``, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers; raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, "must not be empty")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, "; ".join(errors))
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"{value!r} is not one of {', '.join(map(repr, allowed))}"
                              + did_you_mean(value, allowed))
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__}")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, key: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(key or cls.__name__, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}",
            f"unknown key; allowed keys here: {', '.join(sorted(fields))}",
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(sub, "is required")
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # a dataclass's own check names a field of it
        raise ConfigError(f"{key}.{exc.key}" if key else exc.key, exc.reason) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(key)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (dataclasses, tuples -> lists) for YAML/JSON and hashing."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested keys joined by ``sep``: ``{"weight": {"lung": 1}}`` -> ``{"weight/lung": 1}``
    (Optuna's search space and MLflow's parameter names both take flat keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, f"{key}{sep}", sep)
        else:
            out[key] = v
    return out


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``["search.num_samples=8", "data.fit=pad"]`` -> ``{"search.num_samples": 8, ...}``.

    Values are read as YAML (``8`` -> int, ``[pad, stretch]`` -> list, ``true`` -> bool), so
    ``--set`` can give any value the experiment file can.
    """

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}", "expected KEY=VALUE, e.g. search.num_samples=8")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}", f"the value is not valid YAML ({_one_line(exc)})"
                              ) from None
        if isinstance(parsed, str):  # YAML 1.1 reads "1e-4" as a string
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def output_folder(value: str) -> Path:
    """argparse type of ``--output``: a local or mounted folder; object-store URIs are refused.

    The run folder is read and written with plain file operations by the driver and every Ray
    worker (results, checkpoints, the backbone store), so ``s3://`` / ``gs://`` / ``az://``
    cannot work there. Refusing at start beats failing after training: mount the bucket
    (s3fs, gcsfuse, blobfuse, an NFS/EFS/Filestore share) on every node and pass the mount
    path (cluster/README.md, "Storage").
    """

    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise argparse.ArgumentTypeError(
            f"{value}: {scheme}:// storage is not supported for run folders; mount it on every "
            f"node (s3fs, gcsfuse, NFS/EFS) and pass the mounted path (see cluster/README.md)")
    return Path(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _yaml_error(exc: Exception, path: Path) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or _one_line(exc)
    return ConfigError(where, f"not valid YAML: {what}", file=str(path))


def load_yaml(path: str | Path, not_inherited: tuple[str, ...] = (),
              _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; a top-level ``base: other.yaml`` (relative to this file) is read
    first and this file laid over it with ``merge_over_base``.

    Keys in ``not_inherited`` are taken from this file only, never from a base. Files that
    include each other (a cycle) are refused, as are a missing file and invalid YAML, each
    naming the file.
    """

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError("", f"cannot read the file ({exc.strerror or exc})", str(path)) from None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from None
    if not isinstance(data, dict):
        raise ConfigError("", "must be a YAML mapping of sections (name:, data:, ...)", str(path))
    return resolve_base(data, path, not_inherited, _chain)


def resolve_base(data: dict[str, Any], path: str | Path, not_inherited: tuple[str, ...] = (),
                 _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``data`` (read from ``path``) laid over the file its ``base`` key names, if any."""
    if "base" not in data:
        return data
    here = Path(path).resolve()
    chain = (*_chain, here)
    base = data["base"]
    if not isinstance(base, str) or not base:
        raise ConfigError("base", f"expected the path of another experiment file, got {base!r}",
                          str(path))
    base_path = (here.parent / base).resolve()
    if base_path in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(base_path):], base_path))
        raise ConfigError("base", f"experiment files include each other ({cycle})", str(path))
    if not base_path.is_file():
        raise ConfigError("base", f"{base_path} does not exist", str(path))
    inherited = load_yaml(base_path, not_inherited, chain)
    inherited = {k: v for k, v in inherited.items() if k not in not_inherited}
    return merge_over_base(inherited, {k: v for k, v in data.items() if k != "base"})


def merge_over_base(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``: mappings merge key by key (``over`` wins), anything else
    (lists included) is replaced whole, so ``test: []`` clears a list; ``key: null`` removes an
    inherited setting, so its default applies again."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_over_base(out[key], value)
        else:
            out[key] = value
    return out
