"""A program to run in the sandbox: its source, what to call in it, and the files it finds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from densereward.core.errors import ConfigError

_RESERVED = (".request.json", ".launcher.py", ".python", ".packages")


@dataclass(frozen=True)
class Program:
    """Python source run in the sandbox, and how its value is taken.

    Without ``function`` the source runs as ``__main__`` and its value is the module global
    ``result`` (``None`` if it sets none); with ``function`` the source runs as a module named
    ``__sandbox__`` and its value is what ``function(*args, **kwargs)`` returns. Arguments and the
    value cross the sandbox's wall as JSON.

    >>> Program("result = 6 * 7").name
    'program.py'
    """

    source: str
    """the program's text"""
    function: str | None = None
    """a function of the program to call; ``None`` runs the source as a script"""
    args: tuple[Any, ...] = ()
    """positional arguments of ``function`` (JSON values)"""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """keyword arguments of ``function`` (JSON values)"""
    name: str = "program.py"
    """the program's file name in the scratch directory (tracebacks show it)"""
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    """further files written into the scratch directory first, by relative path (test data, a
    module the program imports)"""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ConfigError("program.source", f"must be text, got {type(self.source).__name__}")
        if self.function is not None and not self.function.isidentifier():
            raise ConfigError("program.function", f"not a Python name: {self.function!r}")
        if self.function is None and (self.args or self.kwargs):
            raise ConfigError("program.args", "arguments need a function to call")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        try:
            json.dumps([self.args, self.kwargs], allow_nan=True)
        except (TypeError, ValueError) as error:
            raise ConfigError("program.args", f"not JSON: {error}") from None
        if not all(isinstance(key, str) for key in self.kwargs):
            raise ConfigError("program.kwargs", "keys must be text")
        for path in (self.name, *self.files):
            _check_relative(path)
        if self.name in self.files:
            raise ConfigError(f"program.files[{self.name!r}]", "is the program itself")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        function: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Program:
        """The program in the file ``path`` (read here, by the caller; the sandbox gets a copy)."""
        path = Path(path)
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(str(path), "no such file") from None
        except IsADirectoryError:
            raise ConfigError(str(path), "is a folder, not a Python file") from None
        except UnicodeDecodeError as error:
            raise ConfigError(str(path), f"not UTF-8 text: {error.reason}") from None
        return cls(source, function, tuple(args), dict(kwargs or {}), name=_file_name(path))


def _file_name(path: Path) -> str:
    name = path.name
    return name if name.endswith(".py") and name not in _RESERVED else "program.py"


def _check_relative(path: str) -> None:
    parts = PurePosixPath(path).parts
    if (
        not path
        or PurePosixPath(path).is_absolute()
        or any(part in ("..", ".") for part in parts)
        or "\\" in path
        or "\0" in path
        or parts[0] in _RESERVED
    ):
        raise ConfigError(f"program.files[{path!r}]", "must be a plain relative path")
