"""Named components (signals, transforms, estimators, worlds) with typed, validated parameters.

A component is a frozen dataclass whose fields are its parameters, subclassing the protocol of
its kind (``core.components``); one decorator registers it:

>>> from dataclasses import dataclass
>>> from densereward.core.components import Transform
>>> @register("transform", "doctest_scale", paper="(none)")
... @dataclass(frozen=True)
... class Scale(Transform):
...     '''Multiply a column by a constant.'''
...     factor: float = 1.0
...     def __call__(self, batch, iteration=0):
...         return batch
>>> build("transform", {"kind": "doctest_scale", "factor": 2}).factor
2.0
>>> unregister("transform", "doctest_scale")

Registration cannot be forgotten: each component package imports all of its modules
(``import_submodules``), and components outside densereward register through the entry-point
group ``densereward.plugins`` (each entry names a module to import), loaded on first lookup.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import math
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from densereward.core.components import Estimator, Signal, Transform, World
from densereward.core.errors import ConfigError
from densereward.core.parameters import check_bounds, describe

KINDS = ("signal", "transform", "estimator", "world")
PROTOCOLS: dict[str, type] = {
    "signal": Signal,
    "transform": Transform,
    "estimator": Estimator,
    "world": World,
}
PLUGIN_GROUP = "densereward.plugins"

T = TypeVar("T")


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    cls: type
    paper: str

    @property
    def summary(self) -> str:
        return (self.cls.__doc__ or "").strip().splitlines()[0] if self.cls.__doc__ else ""

    def parameters(self) -> list[tuple[str, str, Any]]:
        """``(name, type, default)`` for each parameter."""
        hints = typing.get_type_hints(self.cls, include_extras=True)
        out = []
        for f in dataclasses.fields(self.cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            out.append((f.name, _type_name(hints[f.name]), default))
        return out


_REGISTRY: dict[tuple[str, str], Component] = {}
_PLUGINS_LOADED = False


def register(kind: str, name: str, paper: str = "") -> Callable[[type[T]], type[T]]:
    """Class decorator: make a dataclass available in recipes as ``{kind: name, ...}``."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}")

    def decorate(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be registered")
        protocol = PROTOCOLS[kind]
        if protocol not in cls.__mro__:
            raise TypeError(
                f"{cls.__name__} must subclass densereward.core.components.{protocol.__name__} "
                f"to be registered as a {kind}"
            )
        defines = {name for k in cls.__mro__ if k is not object for name in vars(k)}
        if kind == "signal" and getattr(cls, "bind") is Signal.bind and "__call__" not in defines:  # noqa: B009
            raise TypeError(f"signal {cls.__name__} must define __call__ or bind")
        existing = _REGISTRY.get((kind, name))
        # The same class imported twice (e.g. by doctest collection) re-registers; another does not.
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"{kind} {name!r} is already registered by {existing.cls.__qualname__}"
            )
        _REGISTRY[(kind, name)] = Component(kind, name, cls, paper)
        cls.component_name = name  # type: ignore[attr-defined]
        _check_bounds_on_construction(cls)
        return cls

    return decorate


def _check_bounds_on_construction(cls: type) -> None:
    """Make the declared bounds hold for a component built from Python too (``GAE(gamma=1.5)``
    raises), not only from a recipe: checked once the dataclass's ``__init__`` (and its
    ``__post_init__``) has run."""
    if cls.__dict__.get("_bounds_checked"):
        return
    initialise = cls.__init__  # type: ignore[misc]
    hints: dict[str, Any] = {}

    @functools.wraps(initialise)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        initialise(self, *args, **kwargs)
        if type(self) is not cls:
            return  # a subclass's own wrapper checks its fields
        if not hints:
            hints.update(typing.get_type_hints(cls, include_extras=True))
        for f in dataclasses.fields(cls):
            annotation = hints.get(f.name)
            if not f.init or annotation is None or get_origin(annotation) is not typing.Annotated:
                continue
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f.name, f"must be a finite number, got {value!r}")
                check_bounds(value, annotation.__metadata__, f.name)

    cls.__init__ = __init__  # type: ignore[misc]
    cls._bounds_checked = True  # type: ignore[attr-defined]


def unregister(kind: str, name: str) -> None:
    _REGISTRY.pop((kind, name), None)


def import_submodules(package: str, recursive: bool = False) -> None:
    """Import every module of ``package`` (and of its sub-packages when ``recursive``), so the
    components they define register themselves: a package needs no hand-kept list."""
    module = importlib.import_module(package)
    walk = pkgutil.walk_packages if recursive else pkgutil.iter_modules
    for info in walk(module.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)


def load_plugins() -> None:
    """Import the modules of the ``densereward.plugins`` entry points (once)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as error:  # a broken plugin is the user's to fix: say which, once
            raise ConfigError(
                f"plugin {entry.name}", f"{entry.value} failed to import ({error})"
            ) from None


def components(kind: str | None = None) -> list[Component]:
    load_plugins()
    return sorted(
        (c for c in _REGISTRY.values() if kind is None or c.kind == kind),
        key=lambda c: (KINDS.index(c.kind), c.name),
    )


def lookup(kind: str, name: str, path: str = "") -> Component:
    load_plugins()
    if (kind, name) not in _REGISTRY:
        known = ", ".join(c.name for c in components(kind))
        raise ConfigError(path, f"unknown {kind} {name!r} (known: {known})")
    return _REGISTRY[(kind, name)]


def build(kind: str, spec: Mapping[str, Any], path: str = "") -> Any:
    """Instantiate a registered component from ``{"kind": name, **parameters}``."""
    if not isinstance(spec, Mapping):
        raise ConfigError(path, f"expected a mapping with a 'kind', got {_show(spec)}")
    if "kind" not in spec:
        raise ConfigError(path, "missing 'kind'")
    name = spec["kind"]
    if not isinstance(name, str):
        raise ConfigError(f"{path}.kind", f"expected a name, got {_show(name)}")
    component = lookup(kind, name, f"{path}.kind" if path else "kind")
    parameters = {key: value for key, value in spec.items() if key != "kind"}
    return build_config(component.cls, parameters, path, f"{kind} {name!r}")


def build_config(
    cls: type[T],
    given: Mapping[str, Any],
    path: str,
    what: str,
    hidden: tuple[str, ...] = (),
) -> T:
    """The dataclass ``cls`` from ``given``, every value checked against its field's type.

    The one loader of typed configs (components, worlds, trainers): unknown keys, wrong types,
    missing parameters and a ``ValueError`` from ``__post_init__`` are ``ConfigError``s naming
    ``path.key``. Fields in ``hidden`` (a trainer's ``seed``: the run sets it) and fields with
    ``init=False`` (working state) are not parameters.
    """
    if not isinstance(given, Mapping):
        raise ConfigError(path, f"expected a mapping of {what} parameters, got {_show(given)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name not in hidden
    }
    values: dict[str, Any] = {}
    for key, value in given.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ConfigError(where, f"unknown {what} parameter (known: {known})")
        values[key] = coerce(value, hints[key], where)
    missing = [
        f.name
        for f in fields.values()
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(path, f"{what} needs parameter(s): {', '.join(missing)}")
    try:
        return cls(**values)
    except ConfigError as error:  # a __post_init__ that names the field: put it under ``path``
        raise ConfigError(".".join(p for p in (path, error.path) if p), error.problem) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(path, str(error)) from None


def coerce(value: Any, annotation: Any, path: str) -> Any:
    """Check ``value`` against a type annotation; widen int to float; tuples from lists.

    A float is finite; an ``Annotated`` type's ``annotated_types`` bounds are checked
    (``core.parameters``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Annotated:
        value = coerce(value, args[0], path)
        check_bounds(value, annotation.__metadata__, path)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [option for option in args if option is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message ("must be <= 1")
            return coerce(value, options[0], path)
        for option in options:
            try:
                return coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(path, f"expected {_type_name(annotation)}, got {_show(value)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(path, f"expected one of {', '.join(map(repr, args))}, got {_show(value)}")
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {_show(value)}")
        item = args[0] if args else Any
        items = [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, typing.Mapping) or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {_show(value)}")
        key_type, value_type = args if args else (Any, Any)
        return {
            coerce(k, key_type, path): coerce(v, value_type, f"{path}.{k}")
            for k, v in value.items()
        }
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            shown = repr(value) if isinstance(value, float) else _show(value)
            raise ConfigError(path, f"must be a finite number, got {shown}")
        return number
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_show(value)}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_show(value)}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_show(value)}")
        return value
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(path, f"expected {_type_name(annotation)}, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0]) + describe(annotation.__metadata__)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))
