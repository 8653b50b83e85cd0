"""Error types. Every user-facing failure is a :class:`DenseRewardError` that knows where it happened.

The CLI prints ``str(error)`` as one line and exits with code 2; Python callers catch the type.
"""

from __future__ import annotations


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
