"""How a config spec is declared: a frozen attrs class, its errors named.

``ServiceSpec``, ``CheckSpec``, ``Rule``, ``AlertSpec`` and ``MonitorConfig``
are each ``@spec_class("kind")`` over ``@attrs.frozen(field_transformer=keyed)``,
their fields' converters and validators drawn from :mod:`procwork._validate`.
:func:`keyed` makes a field's error carry its key, :func:`spec_class` makes the
class raise a :class:`FieldError` that names the entry too, and :func:`toml`
and :func:`file_keys` say how the fields are read and written as config keys.

Design: ARCHITECTURE.md, "Config specs".
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from procwork import _validate as validate
from procwork._errors import ConfigError

__all__ = [
    "NOT_IN_FILE",
    "FieldError",
    "TomlKey",
    "file_keys",
    "keyed",
    "required_keys",
    "spec_class",
    "toml",
    "unit",
]

_Class = TypeVar("_Class", bound=type)

_TOML = "procwork.toml"
_UNIT = "procwork.unit"

# The converters whose values have units: their fields take "5s" or "64K"
# (tested for every such field, found by this metadata).
_UNITS: Mapping[object, str] = {
    validate.duration: "seconds",
    validate.optional_duration: "seconds",
    validate.size: "bytes",
    validate.optional_size: "bytes",
}


class FieldError(ConfigError):
    """A value of a spec is wrong: names the entry, the key and the problem.

    ``str()`` is the message for a caller in Python (``service 'web':
    stop_timeout must be ...``); a config loader words it with the file and
    the table instead, from :attr:`detail`.

    Attributes:
        entry: Which spec (``"service 'web'"``), None when its name is the
            value that is wrong.
        kind: What the spec is (``"service"``).
        key: The key whose value is wrong; None for a problem of the entry
            as a whole (``"no selector: ..."``).
        problem: What is wrong (``"must be ..., not -1"``).
    """

    def __init__(
        self, entry: str | None, kind: str, key: str | None, problem: str
    ) -> None:
        self.entry = entry
        self.kind = kind
        self.key = key
        self.problem = problem
        super().__init__(
            f"{kind} {self.detail}" if entry is None else f"{entry}: {self.detail}"
        )

    @property
    def detail(self) -> str:
        """The key and the problem: ``"stop_timeout must be ..."``."""
        return self.problem if self.key is None else f"{self.key} {self.problem}"


# A traceback names the class a caller catches: procwork.ConfigError (this is
# one, with the parts of its message kept for the config loader).
FieldError.__module__ = "procwork"
FieldError.__qualname__ = "ConfigError"


def spec_class(
    kind: str,
    *,
    entry: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Callable[[_Class], _Class]:
    """Class decorator over ``attrs.frozen(field_transformer=keyed)``: a bad
    value raises :class:`FieldError` naming the entry and the key.

    Args:
        kind: What the spec is, in messages (``"service"``).
        entry: The entry's name from the arguments given (by name);
            default ``"<kind> '<name>'"`` from the ``name`` argument, or
            None when that is no usable name.
    """

    def named(arguments: Mapping[str, Any]) -> str | None:
        name = arguments.get("name")
        return f"{kind} {name!r}" if isinstance(name, str) and name else None

    entry_of = entry or named

    def decorate(cls: _Class) -> _Class:
        init = cls.__dict__["__init__"]  # the one attrs made
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except validate.Invalid as e:
                # Bound only for the message: an error is rare, a spec not.
                arguments = signature.bind_partial(self, *args, **kwargs).arguments
                # A bad name cannot name the entry: "service name must be ...".
                who = None if e.key == "name" else entry_of(arguments)
                raise FieldError(who, kind, e.key, e.problem) from None

        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return decorate


def keyed(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """The attrs ``field_transformer`` of every spec: a field's converter and
    validator raise :class:`~procwork._validate.Invalid` naming its key, and
    a field whose values have units says so in its metadata (see :func:`unit`)."""
    return [_keyed(field) for field in fields]


def _keyed(field: attrs.Attribute[Any]) -> attrs.Attribute[Any]:
    key = field.name
    changes: dict[str, Any] = {}
    # A plain function here (the specs use no attrs.Converter, which newer
    # attrs has and 22.2 has not).
    convert: Any = field.converter
    if convert is not None:

        def converter(value: Any) -> Any:
            try:
                return convert(value)
            except validate.Invalid as e:
                raise _at(e, key) from None

        converter.__wrapped__ = convert  # type: ignore[attr-defined]
        changes["converter"] = converter
        if convert in _UNITS:
            changes["metadata"] = {**field.metadata, _UNIT: _UNITS[convert]}
    check = field.validator
    if check is not None:

        def validator(instance: Any, attribute: Any, value: Any) -> None:
            try:
                check(instance, attribute, value)
            except validate.Invalid as e:
                raise _at(e, key) from None

        changes["validator"] = validator
    return field.evolve(**changes) if changes else field


def _at(error: validate.Invalid, key: str) -> validate.Invalid:
    """The error, naming ``key`` unless it names a key already."""
    return error if error.key is not None else validate.Invalid(error.problem, key)


# -- the config file's view of a spec --------------------------------------------


@attrs.frozen
class TomlKey:
    """How a field is written in a config file (field metadata, see :func:`toml`).

    Attributes:
        false_is_none: TOML has no null: ``false`` stands for None (no
            limit, none), read and written.
        write: The value to write, from the whole spec, when it is not
            the field's value as it is kept (``http``: ``"HOST:PORT"``).
    """

    false_is_none: bool = False
    write: Callable[[Any], object] | None = None


def toml(
    *, false_is_none: bool = False, write: Callable[[Any], object] | None = None
) -> dict[str, object]:
    """Field metadata for a key that is not read or written as it is kept."""
    return {_TOML: TomlKey(false_is_none, write)}


#: Field metadata: the field is no key of the config file (``source``).
NOT_IN_FILE: Mapping[str, object] = {_TOML: None}


# Per class: asked for at every entry of every config read.
_FILE_KEYS: dict[type, Mapping[str, TomlKey]] = {}


def file_keys(cls: type) -> Mapping[str, TomlKey]:
    """The keys of ``cls``'s table in a config file, in field order."""
    found = _FILE_KEYS.get(cls)
    if found is None:
        keys = {}
        for field in attrs.fields(cls):
            key = field.metadata.get(_TOML, TomlKey())
            if field.init and key is not None:
                keys[field.name] = key
        found = _FILE_KEYS[cls] = MappingProxyType(keys)
    return found


def required_keys(cls: type) -> list[str]:
    """The keys of ``cls``'s table that have no default."""
    keys = file_keys(cls)
    return [
        field.name
        for field in attrs.fields(cls)
        if field.name in keys and field.default is attrs.NOTHING
    ]


def unit(field: attrs.Attribute[Any]) -> str | None:
    """``"seconds"`` for a duration field, ``"bytes"`` for a size, else None."""
    found = field.metadata.get(_UNIT)
    return found if isinstance(found, str) else None
