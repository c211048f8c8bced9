"""Typed, validated config sections.

A section is a name plus an ordered mapping of field name -> Field.  Values are
plain dicts; validation checks types, ranges and choices and names the field
that is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigValidationError(Exception):
    def __init__(self, section: str, field: str, message: str):
        super().__init__(f"{section}.{field}: {message}")
        self.section = section
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Field:
    type: type  # bool, int, float, str, list, dict
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    env: str | None = None  # env var that seeds it
    help: str = ""
    item_type: type | None = None  # for list / dict values
    nullable: bool = False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_env(f: Field, raw: str) -> Any:
    """Convert an env var string to the field's type (validation follows)."""
    if f.type is bool:
        v = raw.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        return raw
    if f.type is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if f.type is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    if f.type is list:
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


def coerce(section: str, name: str, f: Field, value: Any) -> Any:
    """Validate one value; returns the normalised value or raises."""
    if value is None:
        if f.nullable:
            return None
        raise ConfigValidationError(section, name, "must not be null")
    t = f.type
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigValidationError(section, name, "must be a boolean")
    elif t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigValidationError(section, name, "must be an integer")
    elif t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigValidationError(section, name, "must be a number")
        value = float(value)
        if value != value:  # NaN
            raise ConfigValidationError(section, name, "must be a number")
    elif t is str:
        if not isinstance(value, str):
            raise ConfigValidationError(section, name, "must be a string")
    elif t is list:
        if not isinstance(value, list):
            raise ConfigValidationError(section, name, "must be a list")
        if f.item_type is not None:
            for item in value:
                if not isinstance(item, f.item_type) or isinstance(item, bool) and f.item_type is not bool:
                    raise ConfigValidationError(section, name, f"items must be {f.item_type.__name__}")
        value = list(value)
    elif t is dict:
        if not isinstance(value, dict):
            raise ConfigValidationError(section, name, "must be an object")
        if f.item_type is not None:
            for k, item in value.items():
                ok = isinstance(item, (int, float)) and not isinstance(item, bool) if f.item_type is float \
                    else isinstance(item, f.item_type) and not isinstance(item, bool)
                if not ok:
                    raise ConfigValidationError(section, f"{name}.{k}", f"must be {f.item_type.__name__}")
                if f.min is not None and item < f.min:
                    raise ConfigValidationError(section, f"{name}.{k}", f"must be >= {f.min}")
                if f.max is not None and item > f.max:
                    raise ConfigValidationError(section, f"{name}.{k}", f"must be <= {f.max}")
        return dict(value)
    if f.choices is not None:
        items = value if t is list else [value]
        for item in items:
            if item not in f.choices:
                raise ConfigValidationError(section, name, f"must be one of {list(f.choices)}")
    if t in (int, float):
        if f.min is not None and value < f.min:
            raise ConfigValidationError(section, name, f"must be >= {f.min}")
        if f.max is not None and value > f.max:
            raise ConfigValidationError(section, name, f"must be <= {f.max}")
    return value


class Section:
    def __init__(self, name: str, fields: dict[str, Field], doc: str = ""):
        self.name = name
        self.fields = fields
        self.doc = doc

    def defaults(self) -> dict:
        return {k: (list(f.default) if isinstance(f.default, list) else
                    dict(f.default) if isinstance(f.default, dict) else f.default)
                for k, f in self.fields.items()}

    def validate(self, current: dict, changes: dict) -> dict:
        """Return current updated with changes, or raise on the first bad field."""
        if not isinstance(changes, dict):
            raise ConfigValidationError(self.name, "", "body must be a JSON object")
        new = dict(current)
        for k, v in changes.items():
            f = self.fields.get(k)
            if f is None:
                raise ConfigValidationError(self.name, k, "unknown field")
            new[k] = coerce(self.name, k, f, v)
        return new
