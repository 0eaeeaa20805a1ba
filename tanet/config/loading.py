"""Config files and overrides: a YAML file (or a shipped recipe by name) and ``--set a.b=v`` pairs,
checked against the schema (:mod:`tanet.config.schema`): unknown keys name the closest known
key, values are checked against the field's type."""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Union

from tanet.config.schema import Config, ConfigError

__all__ = ["load_config", "find_config", "list_recipes", "apply_overrides", "config_to_dict",
           "config_from_dict", "dump_config", "all_keys"]


# dict <-> dataclass with type checking


def _fields(obj_or_cls: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj_or_cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. ``["model.name", ..., "output"]``."""
    keys = []
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown(key: str, source: str) -> ConfigError:
    sections = [n for n, tp in _hints(Config).items() if dataclasses.is_dataclass(tp)]
    close = difflib.get_close_matches(key, all_keys() + sections, n=1, cutoff=0.5)
    if not close:  # a misspelt leaf under the right section, e.g. "train.eopchs"
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in all_keys() if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]],
                                                                    cutoff=0.7)][:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{source}: unknown key {key!r}{hint}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_REPR = reprlib.Repr()  # values in messages: short, even for huge or self-referencing YAML
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: {key} expects {_type_name(tp)}, got {_REPR.repr(value)} "
                      f"({type(value).__name__})")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {_coerce(k, args[0], key, source): _coerce(v, args[1], f"{key}.{k}", source)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise ConfigError(f"{source}: {key} expects a number, got NaN")
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key} expects a string, got {value!r} (YAML reads "
                              f"yes/no/on/off as booleans: quote it)")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. data.labels: 400 would be odd, but a name like 2024 is not
        raise bad
    raise ConfigError(f"{source}: {key}: unsupported field type {tp}")


def _set(cfg: Any, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
            raise _unknown(key, source)
        tp = _hints(type(obj))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key} is a section; set its keys, "
                                      f"e.g. {key}.{next(iter(_fields(tp)))}=...")
                for k, v in value.items():
                    _set(cfg, f"{key}.{k}", v, source)
            else:
                if key == "train.amp" and value is False:
                    value = "off"  # YAML 1.1 reads a bare `off` as false
                setattr(obj, part, _coerce(value, tp, key, source))
            return
        obj = getattr(obj, part)


def _leaf_type(cfg: Any, key: str) -> Any:
    """The annotation of config key ``key`` (None for an unknown key or a section)."""
    obj: Any = type(cfg)
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
            return None
        obj = _hints(obj)[part]
    return None if dataclasses.is_dataclass(obj) else obj



def config_from_dict(d: dict[str, Any] | None, *, source: str = "config",
                     base: Config | None = None) -> Config:
    """Build a :class:`Config` from a nested dict (unknown keys and bad types are errors)."""
    cfg = base if base is not None else Config()
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
    for k, v in d.items():
        _set(cfg, str(k), v, source)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict (JSON/YAML-safe) of a config."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply ``["a.b=v", ...]``; ``v`` is parsed as YAML (``1e-3``, ``[1, 2]``, ``null``)."""
    import yaml

    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        key = key.strip()
        text_field = _leaf_type(cfg, key) in (str, str | None)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
            if not text_field:
                raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
            value = raw.strip()
        if text_field and value is not None and not isinstance(value, str):
            value = raw.strip()  # a path or template, e.g. {:05d}.jpg, is text as written
        if isinstance(value, str) and _is_floatish(value):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
        _set(cfg, key, value, f"--set {key}")
    return cfg


def _is_floatish(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``tanet/configs`` (usable as ``--config NAME``)."""
    from tanet.io import shipped_yaml

    return shipped_yaml("tanet.configs")


def find_config(path_or_name: str | os.PathLike) -> Path:
    """A config file: ``path_or_name`` itself if it exists, else the shipped recipe of that name
    (``synthetic_tanet_tiny``, ``synthetic_tanet_tiny.yaml`` or ``configs/...yaml``)."""
    from tanet.io import find_yaml

    found = find_yaml(path_or_name, "tanet.configs")
    if found is not None:
        return found
    path = Path(path_or_name)
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    close = difflib.get_close_matches(name, list_recipes(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{path}: no such config file or recipe{hint} (recipes: "
                      f"{', '.join(list_recipes())})")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file or shipped recipe ``path`` (if given), then ``overrides``;
    validated."""
    import yaml

    cfg = Config()
    source = "config"
    if path is not None:
        path = find_config(path)
        source = str(path)
        try:
            data = _floatify(yaml.safe_load(_read_text(path)))
        except (yaml.YAMLError, ValueError, OverflowError) as e:  # an int of > 4300 digits; a
            # \U escape past the last code point
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply") from None
        cfg = config_from_dict(data, source=source, base=cfg)
    apply_overrides(cfg, overrides)
    return cfg.validate(source if not overrides else f"{source} (with --set)")


def _read_text(path: Path) -> str:
    """A config file's text: UTF-8 (optional BOM), or UTF-16 with a BOM."""
    data = path.read_bytes()
    enc = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        line = data[:e.start].decode(enc, errors="replace").count("\n") + 1
        raise ConfigError(f"{path}:{line}: not {'UTF-16' if enc == 'utf-16' else 'UTF-8'} text "
                          f"(byte 0x{data[e.start]:02x} at offset {e.start}); save it as "
                          f"UTF-8") from None


def _floatify(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """YAML 1.1 leaves ``1e-4`` (no dot) as a string; read such strings as floats.

    Each list or mapping is converted once (``memo``): YAML aliases share objects, and walking
    them expanded would take exponential time on a hostile file ("billion laughs")."""
    memo = {} if memo is None else memo
    if isinstance(obj, (dict, list)):
        if id(obj) in memo:
            return memo[id(obj)]
        if isinstance(obj, dict):
            out = memo[id(obj)] = {}
            out.update({k: _floatify(v, memo) for k, v in obj.items()})
        else:
            out = memo[id(obj)] = []
            out.extend(_floatify(v, memo) for v in obj)
        return out
    if isinstance(obj, str) and _is_floatish(obj) and any(c in obj for c in "eE."):
        return float(obj)
    return obj


def dump_config(cfg: Config, path: str | os.PathLike, *,
                notes: dict[str, str] | None = None) -> None:
    """Write ``cfg`` as YAML (atomically), e.g. ``runs/x/config.yaml``. ``notes``: a comment
    beside a ``section.key`` line, e.g. ``{"train.amp": "resolved: bf16 (...)"}`` writes
    ``amp: auto  # resolved: bf16 (...)`` (comments: reading the file back ignores them)."""
    import yaml

    from tanet.io import atomic_path

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if notes:
        lines, section = text.splitlines(), ""
        for i, line in enumerate(lines):
            if line and not line.startswith(" "):
                section = line.split(":", 1)[0]
            key = f"{section}.{line.strip().split(':', 1)[0]}" if line.startswith("  ") else ""
            if line.startswith("  ") and not line.startswith("   ") and key in notes:
                lines[i] = f"{line}  # {notes[key]}"
        text = "\n".join(lines) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
