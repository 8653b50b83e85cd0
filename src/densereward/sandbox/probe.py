"""What this machine offers to isolate a process, detected once: root, namespaces, the interpreter."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from densereward.core.errors import DenseRewardError


class SandboxUnavailable(DenseRewardError):
    """This machine cannot isolate untrusted code well enough to run it (the message says why)."""


@dataclass(frozen=True)
class Capabilities:
    """The isolation mechanisms this machine offers, as :func:`probe` found them."""

    root: bool
    """the caller is root, so the program can run as a fresh unprivileged user (its own uid, which
    makes the process limit bind and the filesystem the kernel's permission checks)"""
    unshare: str | None
    """path of util-linux ``unshare``, through which namespaces are entered"""
    user_namespace: bool
    """a non-root caller can enter a user namespace (and through it the others); unused as root"""
    network_namespace: bool
    """a new network namespace works: the program sees only a loopback interface that is down"""
    mount_namespace: bool
    """a new mount namespace works: the filesystem is remounted read-only in it, the scratch
    directory is a size-bounded tmpfs"""
    pid_namespace: bool
    """a new PID namespace (with its own ``/proc``) works: the program sees only its own processes
    and every one of them dies with the sandbox's init"""
    interpreter: str
    """the base interpreter the sandbox runs (never a virtual environment's)"""
    prefix: str
    """its installation prefix (stdlib, ``lib-dynload``)"""
    interpreter_public: bool
    """every user can reach and read the prefix; if not, a mount namespace exposes it read-only
    inside the scratch directory"""

    def refusal(self) -> str | None:
        """Why a sandbox cannot run here, or ``None`` when it can."""
        if self.root:
            if not self.interpreter_public and not self.mount_namespace:
                return (
                    f"the interpreter {self.prefix} is not readable by an unprivileged user and no "
                    "mount namespace is available to expose it"
                )
            return None
        if not (self.user_namespace and self.mount_namespace and self.pid_namespace):
            return (
                "not root (cannot switch to an unprivileged user) and no user, mount and PID "
                "namespaces: a program would run with all of this user's rights"
            )
        return None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """Names of the mechanisms a sandbox uses here, besides the resource limits."""
        names = ["unprivileged_user" if self.root else "user_namespace", "no_new_privileges"]
        names += [
            name
            for name, present in (
                ("network_namespace", self.network_namespace),
                ("mount_namespace", self.mount_namespace),
                ("pid_namespace", self.pid_namespace and self.mount_namespace),
            )
            if present
        ]
        return tuple(names)


_NETWORK_CHECK = (
    "import socket, sys; sys.exit(0 if [n for _, n in socket.if_nameindex()] == ['lo'] else 1)"
)
_PID_CHECK = "import os, sys; sys.exit(0 if os.getpid() == 1 else 1)"


@functools.cache
def probe() -> Capabilities:
    """Detect the isolation mechanisms of this machine (each namespace by entering it once).

    Cached: the answer does not change while the process lives."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    prefix = os.path.realpath(sys.base_prefix)
    root = os.geteuid() == 0
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    isolated = [interpreter, "-I", "-S", "-c"]

    def works(*command: str) -> bool:
        if unshare is None:
            return False
        base = [] if root else ["--user", "--map-root-user"]
        try:
            done = subprocess.run(
                [unshare, *base, *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=20,
                env={"PATH": "/usr/bin:/bin"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    return Capabilities(
        root=root,
        unshare=unshare,
        user_namespace=not root and works("true"),
        network_namespace=works("--net", *isolated, _NETWORK_CHECK),
        mount_namespace=works("--mount", "--propagation", "private", "true"),
        pid_namespace=works(
            "--pid", "--fork", "--kill-child", "--mount-proc", *isolated, _PID_CHECK
        ),
        interpreter=interpreter,
        prefix=prefix,
        interpreter_public=_public(Path(prefix)) and _public(Path(interpreter)),
    )


def _public(path: Path) -> bool:
    """Whether a user who owns nothing can read ``path`` (and enter every folder above it)."""
    try:
        for folder in (*reversed(path.parents), path):
            mode = folder.stat().st_mode
            needed = stat.S_IXOTH | (stat.S_IROTH if folder == path else 0)
            if mode & needed != needed:
                return False
    except OSError:
        return False
    return True
