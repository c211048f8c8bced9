"""Typed, validated config sections.

A section is a name plus an ordered mapping of field name -> Field, and the
cross-field rules (Rule) its values obey.  Values are plain dicts; validation
checks types, ranges, choices and every rule, and names every field that is
wrong (not just the first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable


class ConfigValidationError(Exception):
    """One or more bad fields of one section: .field is the first, .errors every one."""

    def __init__(self, section: str, field: str, message: str, errors: list[dict] | None = None):
        self.section = section
        self.errors = errors or [{"field": field, "message": message}]
        self.field = self.errors[0]["field"]
        self.message = self.errors[0]["message"] if errors else message
        super().__init__("; ".join(f"{section}.{e['field']}: {e['message']}" for e in self.errors))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(e["field"] for e in self.errors))

    def renamed(self, names: dict[str, str]) -> "ConfigValidationError":
        """The same error with fields named as a request body names them ({field: body name})."""
        def name(f: str) -> str:
            head, dot, rest = f.partition(".")
            return names.get(f) or (names[head] + dot + rest if head in names else f)
        return ConfigValidationError(self.section, "", "", [{**e, "field": name(e["field"])} for e in self.errors])


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
    internal: bool = False  # set by the service itself: read-only through POST /internal/config/{section}
    # more checks of one value: None, a message, or (where inside the value, message) like ("[2]", "...")
    check: Callable[[Any], str | tuple[str, str] | None] | None = None


@dataclass(frozen=True)
class Rule:
    """A cross-field invariant of one section.

    check(values) gets the section's values after a change: True (or None, or
    an empty list) when they obey the rule; False when they break it (every
    field of the rule is named); or the list of offending fields
    ("ttl_by_operation.bogus").
    """
    fields: tuple[str, ...]
    check: Callable[[dict], bool | list | None]
    message: str

    def violations(self, values: dict) -> list[str]:
        ok = self.check(values)
        if ok is True or ok is None:
            return []
        if ok is False:
            return list(self.fields)
        return list(ok)


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
        value = dict(value)
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
    if f.check is not None:
        problem = f.check(value)
        if isinstance(problem, tuple):  # (where inside the value, message): "[2]", ".v1"
            raise ConfigValidationError(section, name + problem[0], problem[1])
        if problem:
            raise ConfigValidationError(section, name, problem)
    return value


class Section:
    def __init__(self, name: str, fields: dict[str, Field], doc: str = "", rules: Iterable[Rule] = ()):
        self.name = name
        self.fields = fields
        self.doc = doc
        self.rules = tuple(rules)
        for r in self.rules:
            unknown = set(r.fields) - set(fields)
            if unknown:
                raise ValueError(f"section {name}: rule {r.message!r} names unknown fields {sorted(unknown)}")

    def defaults(self) -> dict:
        return {k: (list(f.default) if isinstance(f.default, list) else
                    dict(f.default) if isinstance(f.default, dict) else f.default)
                for k, f in self.fields.items()}

    def validate(self, current: dict, changes: dict) -> dict:
        """Return current updated with changes, or raise naming every bad field.

        Each changed value is checked alone first; then every rule is checked
        on the values after the change (rules over a field that is already
        wrong are skipped).  Offending fields the change names come first.
        """
        if not isinstance(changes, dict):
            raise ConfigValidationError(self.name, "body", "body must be a JSON object")
        new = dict(current)
        errors: list[dict] = []
        for k, v in changes.items():
            f = self.fields.get(k)
            if f is None:
                errors.append({"field": k, "message": "unknown field"})
                continue
            try:
                new[k] = coerce(self.name, k, f, v)
            except ConfigValidationError as e:
                errors.extend(e.errors)
        bad = {e["field"].split(".", 1)[0] for e in errors}
        for r in self.rules:
            if bad & set(r.fields):
                continue
            for field in r.violations(new):
                errors.append({"field": field, "message": r.message, "rule": list(r.fields)})
        if errors:
            errors.sort(key=lambda e: e["field"].split(".", 1)[0] not in changes)  # stable: the change's first
            raise ConfigValidationError(self.name, "", "", errors)
        return new

    def check_rules(self, values: dict) -> None:
        """Raise when values (seeded, or loaded) break a rule of this section."""
        self.validate(values, {})

    def refuse_internal(self, changes: dict) -> None:
        """Raise naming every field of changes that only the service itself sets."""
        errors = [{"field": k, "message": "is set by the service itself (read-only here)"}
                  for k in changes if k in self.fields and self.fields[k].internal]
        if errors:
            raise ConfigValidationError(self.name, "", "", errors)
