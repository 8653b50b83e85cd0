"""Error types. Every user-facing failure is a :class:`DenseRewardError` that knows where it happened.

The CLI prints ``str(error)`` as one line and exits with code 2; Python callers catch the type.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type, args: tuple[Any, ...], fields: dict[str, Any]) -> Exception:
    error: Exception = cls(*args, **fields)
    return error


class DenseRewardError(Exception):
    """Base class of every error densereward raises on bad input or bad configuration."""


class ValidationError(DenseRewardError, ValueError):
    """Data that breaks the data model: a NaN reward, lengths that disagree, a malformed line.

    The location is kept in fields so that a file reader can translate a trajectory index into the
    line it came from (:meth:`at_line`) without parsing the message.
    """

    def __init__(
        self,
        field: str,
        problem: str,
        *,
        trajectory: int | None = None,
        step: int | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        self.field = field
        self.problem = problem
        self.trajectory = trajectory
        self.step = step
        self.line = line
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.trajectory is not None:
            where.append(f"trajectory {self.trajectory}")
        if self.step is not None:
            where.append(f"step {self.step}")
        prefix = ", ".join(where)
        return (
            f"{prefix}: field '{self.field}': {self.problem}"
            if prefix
            else (f"field '{self.field}': {self.problem}")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields: the default pickling (``cls(*args)``) cannot rebuild it, and a
        # Ray worker's error comes back to the driver pickled
        return (_rebuild, (type(self), (self.field, self.problem), self._fields()))

    def _fields(self) -> dict[str, Any]:
        return {
            "trajectory": self.trajectory,
            "step": self.step,
            "line": self.line,
            "source": self.source,
        }

    def at_line(self, line: int | None, source: str | None = None) -> ValidationError:
        """The same error, located at ``line`` of ``source`` (a file reader calls this)."""
        return ValidationError(
            self.field,
            self.problem,
            trajectory=self.trajectory,
            step=self.step,
            line=line,
            source=source if source is not None else self.source,
        )


class ConfigError(DenseRewardError, ValueError):
    """A recipe or component configuration that cannot be used: unknown name, wrong type."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.path, self.problem), {}))


class NonFiniteError(ValidationError):
    """A number no optimiser should see: NaN, infinite, or too large for the trainer's dtype.

    Raised by the pipeline (naming the first stage that wrote it) or by a trainer (a loss or a
    gradient); each layer it passes through on its way out adds where it was (``within``): the
    trainer the update and seed, the run the method.
    """

    def __init__(
        self,
        field: str,
        problem: str,
        *,
        trajectory: int | None = None,
        step: int | None = None,
        where: tuple[str, ...] = (),
    ) -> None:
        self.where = where
        super().__init__(field, problem, trajectory=trajectory, step=step)

    def _fields(self) -> dict[str, Any]:
        return {"trajectory": self.trajectory, "step": self.step, "where": self.where}

    def _message(self) -> str:
        inner = super()._message()
        return f"{', '.join(self.where)}: {inner}" if self.where else inner

    def within(self, *where: str) -> NonFiniteError:
        """The same error, located inside ``where`` (outermost first)."""
        return NonFiniteError(
            self.field,
            self.problem,
            trajectory=self.trajectory,
            step=self.step,
            where=(*where, *self.where),
        )


class Interrupted(DenseRewardError):
    """The user pressed Ctrl-C; the message says what was kept and how to go on. The CLI
    prints it as one line and exits with 130, the shell's code for SIGINT."""
