"""What a sandboxed run produced: its value, how it ended, what stopped it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Limit = Literal["cpu", "memory", "wall", "file_size", "processes", "open_files", "result_size"]
"""The limit that stopped a program: CPU seconds, address space, wall-clock time, a file past its
size (or a full scratch directory), the process count, open files, a reply past its size."""

Status = Literal["ok", "error", "limit"]


@dataclass(frozen=True)
class SandboxResult:
    """The structured outcome of one program run in the sandbox.

    ``status`` is ``"ok"`` when the program ran to its end and its value came back, ``"limit"``
    when a limit stopped it (``limit`` says which), ``"error"`` when it raised, exited non-zero or
    died of a signal no limit explains (``error`` says how, in one line).
    """

    status: Status
    """ok, error or limit"""
    value: Any
    """the JSON value of the program (``None`` unless ``status`` is ok)"""
    error: str | None
    """one line: the exception that ended the program, or how it died"""
    limit: Limit | None
    """the limit that stopped it, if one did"""
    exit_code: int | None
    """the program's exit status, ``None`` if a signal killed it"""
    signal: int | None
    """the signal that killed it, if one did"""
    stdout: str
    """the last bytes of its standard output (bounded by ``Sandbox.output_bytes``)"""
    stderr: str
    """the last bytes of its standard error (tracebacks land here)"""
    elapsed: float
    """wall-clock seconds, from start to the last process gone"""
    cpu_seconds: float
    """CPU seconds of the program's main process"""
    network_isolated: bool
    """whether it ran in its own network namespace (if not, it had the machine's network)"""
    mechanisms: tuple[str, ...]
    """the isolation mechanisms it ran under, besides the resource limits"""
    user: int | None
    """the fresh uid it ran as (``None`` in a user namespace, where it is the caller's own)"""

    @property
    def ok(self) -> bool:
        """Whether the program ran to its end and returned a value."""
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object (what ``densereward sandbox`` prints)."""
        record = asdict(self)
        record["mechanisms"] = list(self.mechanisms)
        return record
