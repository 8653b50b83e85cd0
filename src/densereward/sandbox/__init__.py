"""A sandbox for code that rewards: model-written reward functions and code under test run in a
separate process tree with resource limits, an unprivileged user, no network, a read-only
filesystem but for a scratch directory, and nothing of the caller's environment or imports.

See ``docs/sandbox.md`` for what is isolated, how, and what happens on machines that offer less.
"""

from densereward.sandbox.probe import Capabilities, SandboxUnavailable, probe
from densereward.sandbox.program import Program
from densereward.sandbox.result import Limit, SandboxResult
from densereward.sandbox.run import Sandbox

__all__ = [
    "Capabilities",
    "Limit",
    "Program",
    "Sandbox",
    "SandboxResult",
    "SandboxUnavailable",
    "probe",
]
