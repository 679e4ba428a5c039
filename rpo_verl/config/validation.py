"""Strict construction of config dataclasses from Hydra/OmegaConf mappings.

Every rpo_verl feature has one dataclass (off by default, defaults = the paper's). ``build_config``
turns the user's mapping into that dataclass and fails at start-up, naming the full key, on an
unknown key, a value of the wrong type, a value outside a ``Literal`` or a failed range check in
the dataclass's ``__post_init__`` (which should raise ``ValueError("<field>: <why>")``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid rpo_verl setting; the message starts with the full dotted key."""


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (without importing omegaconf when not needed)."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: {value!r} is not allowed")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_check_type(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def build_config(cls: type[T], mapping: Any, prefix: str) -> T:
    """Build dataclass ``cls`` from ``mapping`` (dict, DictConfig or None), strictly.

    ``prefix`` is the dotted path of the mapping in the full config (e.g. ``rpo_verl.rpo``) and
    starts every error message, so the user sees which command-line key to fix.
    """
    mapping = _plain(mapping)
    if mapping is None:
        mapping = {}
    if isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of settings, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields) - {"_target_"})
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key (valid keys under {prefix}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in mapping.items():
        if name == "_target_":
            continue
        key = f"{prefix}.{name}"
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_config(annotation, value, key)
        else:
            kwargs[name] = _check_type(key, value, annotation)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix}.{exc}") from exc


def to_dict(config: Any) -> dict:
    """Dataclass -> plain nested dict (for logging and for writing back into the Hydra config)."""
    return dataclasses.asdict(config)
