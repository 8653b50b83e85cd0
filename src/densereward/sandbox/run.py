"""The sandbox: run untrusted Python in a separate, limited, isolated process tree."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densereward.core.errors import ConfigError
from densereward.sandbox.probe import Capabilities, SandboxUnavailable, probe
from densereward.sandbox.program import Program
from densereward.sandbox.result import Limit, SandboxResult

LAUNCHER = Path(__file__).with_name("_launcher.py")

UID_BASE = 1_900_000_000
"""Sandbox users are drawn at random from ``UID_BASE + [0, 2**24)``: a uid no account owns, one
per run, so the process limit counts only that run's processes and killing "every process of the
user" kills nothing else."""

_GRACE = 2.0  # seconds to wait for the pipes to close once the process tree is gone


@dataclass(frozen=True)
class Sandbox:
    """Limits for running untrusted code; :meth:`run` runs one program, :meth:`map` a group.

    Each run is a fresh process tree: a supervisor set up in new network, mount and PID namespaces
    (where the machine offers them, see :func:`~densereward.sandbox.probe.probe`) forks a worker that
    drops to a fresh unprivileged user with no capabilities and no new privileges, under the
    resource limits below, in an isolated interpreter (``-I -S``: the standard library and the
    scratch directory on its path, nothing of the caller's). The filesystem is read-only to it but
    for the scratch directory; its environment holds only ``PATH``, ``HOME``, ``TMPDIR`` and a
    locale. See ``docs/sandbox.md``.

    >>> Sandbox(timeout=5).run_source("result = sum(range(10))").value  # doctest: +SKIP
    45
    """

    timeout: float = 10.0
    """wall-clock seconds before the whole process tree is killed"""
    cpu_seconds: float | None = None
    """CPU seconds of each process (rounded up to whole seconds); ``None``: the timeout"""
    memory_mb: int = 512
    """address space of each process, in MiB"""
    max_processes: int = 32
    """processes and threads the sandbox user may have at once, the program itself included"""
    max_open_files: int = 64
    """open file descriptors of each process"""
    max_file_mb: int = 16
    """the largest file a process may write, in MiB"""
    scratch_mb: int = 64
    """size of the scratch directory, in MiB (bound only with a mount namespace)"""
    output_bytes: int = 65536
    """how much of the end of stdout and of stderr is kept"""
    result_bytes: int = 1 << 20
    """the largest reply (the JSON value) accepted"""
    packages: tuple[str, ...] = ()
    """installed third-party packages the program may import (``("numpy",)``), each exposed
    read-only on its own: never the rest of site-packages, never densereward"""
    capabilities: Capabilities | None = field(default=None, compare=False, repr=False)
    """the machine's mechanisms; ``None``: :func:`probe` them (tests pass fewer to see fallbacks)"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(self.packages))
        for package in self.packages:
            if not isinstance(package, str) or not package.isidentifier():
                raise ConfigError("sandbox.packages", f"not a package name: {package!r}")
        for name in ("timeout", "cpu_seconds"):
            value = getattr(self, name)
            if value is None and name == "cpu_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"sandbox.{name}", f"must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"sandbox.{name}", f"must be positive and finite, got {value}")
        minimum = {"memory_mb": 16, "scratch_mb": 1}
        for name in (
            "memory_mb",
            "max_processes",
            "max_open_files",
            "max_file_mb",
            "scratch_mb",
            "output_bytes",
            "result_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"sandbox.{name}", f"must be an integer, got {value!r}")
            least = minimum.get(name, 1)
            if value < least:
                raise ConfigError(f"sandbox.{name}", f"must be at least {least}, got {value}")

    def run_source(
        self,
        source: str,
        function: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> SandboxResult:
        """Run Python ``source`` in the sandbox (see :class:`Program` for what its value is)."""
        return self.run(Program(source, function, tuple(args), dict(kwargs or {})))

    def run_file(
        self,
        path: str | Path,
        function: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> SandboxResult:
        """Run the Python file ``path`` in the sandbox (a copy of it, under its own name)."""
        return self.run(Program.from_file(path, function, args, kwargs))

    def map(
        self, programs: Iterable[Program], concurrency: int | None = None
    ) -> list[SandboxResult]:
        """Run each program in its own sandbox, ``concurrency`` at a time (default: the CPU
        count); the results come in the order of ``programs``. Each run has its own user, so the
        process limit is per program."""
        programs = list(programs)
        workers = concurrency if concurrency is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise ConfigError("concurrency", f"must be at least 1, got {workers}")
        self._check(self._capabilities())
        if len(programs) <= 1 or workers == 1:
            return [self.run(program) for program in programs]
        with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
            return list(pool.map(self.run, programs))

    def run(self, program: Program) -> SandboxResult:
        """Run ``program`` in a fresh sandbox and wait for every process of it to be gone.

        Raises :class:`SandboxUnavailable` if this machine cannot isolate it, never for what the
        program does: that is in the result."""
        capabilities = self._capabilities()
        self._check(capabilities)
        scratch = tempfile.mkdtemp(prefix="densereward-sandbox-")
        try:
            return self._run_in(program, capabilities, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _capabilities(self) -> Capabilities:
        return self.capabilities if self.capabilities is not None else probe()

    @staticmethod
    def _check(capabilities: Capabilities) -> None:
        refusal = capabilities.refusal()
        if refusal is not None:
            raise SandboxUnavailable(f"sandbox unavailable: {refusal}")

    def _run_in(self, program: Program, capabilities: Capabilities, scratch: str) -> SandboxResult:
        mount = capabilities.mount_namespace
        pid = capabilities.pid_namespace and mount  # its own /proc needs its own mounts
        uid = UID_BASE + secrets.randbelow(1 << 24) if capabilities.root else 0
        bind_prefix = mount and not capabilities.interpreter_public
        visible_prefix = os.path.join(scratch, ".python") if bind_prefix else capabilities.prefix
        status_read, status_write = os.pipe()
        result_read, result_write = os.pipe()
        files = {program.name: program.source.encode(), **_encoded(program.files)}
        cpu = math.ceil(self.cpu_seconds if self.cpu_seconds is not None else self.timeout)
        request = {
            "scratch": scratch,
            "name": program.name,
            "function": program.function,
            "args": list(program.args),
            "kwargs": dict(program.kwargs),
            "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
            "uid": uid,
            "gid": uid,
            "switch_user": capabilities.root,
            "mount": mount,
            "bind_prefix": bind_prefix,
            "prefix": capabilities.prefix,
            "visible_prefix": visible_prefix,
            "scratch_mb": self.scratch_mb,
            "packages": package_folders(self.packages),
            "status_fd": status_write,
            "result_fd": result_write,
            "limits": {
                "cpu": cpu,
                "memory_bytes": self.memory_mb << 20,
                "processes": self.max_processes,
                "open_files": self.max_open_files,
                "file_bytes": self.max_file_mb << 20,
            },
        }
        command = [capabilities.interpreter, "-I", "-S", "-u", f"{scratch}/.launcher.py", scratch]
        namespaces = _namespace_flags(capabilities, mount, pid)
        if namespaces:
            assert capabilities.unshare is not None
            command = [capabilities.unshare, *namespaces, "--", *command]
        environment = {
            "PATH": f"{visible_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": scratch,
            "TMPDIR": scratch,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            # BLAS thread pools would count against the process limit and the address space
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        started = time.monotonic()
        try:
            Path(scratch, ".request.json").write_text(json.dumps(request), encoding="utf-8")
            shutil.copyfile(LAUNCHER, Path(scratch, ".launcher.py"))
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_write, result_write),
                start_new_session=True,
                env=environment,
                cwd=scratch,
            )
        except BaseException:
            for descriptor in (status_read, result_read):
                os.close(descriptor)
            raise
        finally:
            # only the sandbox holds the write ends: its end is the pipes' end
            os.close(status_write)
            os.close(result_write)
        collected = _Collector(self, process, status_read, result_read)
        collected.wait(
            started + self.timeout, lambda: None if pid else _kill_user(uid, capabilities)
        )
        elapsed = time.monotonic() - started
        return self._result(collected, elapsed, cpu, capabilities, uid)

    def _result(
        self,
        collected: _Collector,
        elapsed: float,
        cpu: int,
        capabilities: Capabilities,
        uid: int,
    ) -> SandboxResult:
        status = _json(collected.status) or {}
        reply = _json(collected.reply)
        if "setup_error" in status or (reply is not None and "setup_error" in reply):
            problem = status.get("setup_error") or (reply or {}).get("setup_error")
            raise SandboxUnavailable(f"sandbox unavailable: setting it up failed: {problem}")
        exit_code, killer = status.get("exit_code"), status.get("signal")
        used = float(status.get("cpu_seconds", 0.0))
        limit: Limit | None = None
        error: str | None = None
        value: Any = None
        if collected.timed_out:
            limit, error = "wall", f"killed after {self.timeout:g} s of wall-clock time"
        elif killer is not None:
            if killer == signal.SIGXCPU or (killer == signal.SIGKILL and used >= cpu - 0.05):
                limit, error = "cpu", f"killed after {used:.2f} s of CPU time (limit {cpu} s)"
            elif killer == signal.SIGXFSZ:
                limit, error = "file_size", f"a file grew past {self.max_file_mb} MiB"
            else:
                error = f"killed by signal {killer} ({signal.Signals(killer).name})"
        elif collected.reply_overflow:
            limit, error = "result_size", f"the reply is larger than {self.result_bytes} bytes"
        elif reply is None or not isinstance(reply, dict) or "ok" not in reply:
            error = f"the program exited with status {exit_code} and no reply"
            if not status:
                error = "the sandbox ended without a status: " + _last_line(collected.stderr)
        elif reply["ok"] is True and exit_code == 0:
            value = reply.get("value")
        else:
            error = str(reply.get("error") or f"the program exited with status {exit_code}")
            limit = reply.get("limit") if reply.get("limit") in _LIMITS else None
        return SandboxResult(
            status="ok" if error is None else ("limit" if limit is not None else "error"),
            value=value,
            error=error,
            limit=limit,
            exit_code=exit_code,
            signal=killer,
            stdout=_text(collected.stdout),
            stderr=_text(collected.stderr),
            elapsed=elapsed,
            cpu_seconds=used,
            network_isolated=capabilities.network_namespace,
            mechanisms=capabilities.mechanisms,
            user=uid if capabilities.root else None,
        )


_LIMITS = ("cpu", "memory", "wall", "file_size", "processes", "open_files", "result_size")


def package_folders(packages: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, folder)`` of each installed top-level package and of the shared libraries its
    wheel carries beside it (``numpy.libs``); a one-line ``ConfigError`` for one not installed."""
    folders: list[tuple[str, str]] = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise ConfigError("sandbox.packages", f"{name!r} is not an installed package")
        folder = os.path.realpath(locations[0])
        folders.append((name, folder))
        companion = Path(folder).with_name(f"{name}.libs")
        if companion.is_dir():
            folders.append((companion.name, str(companion)))
    return folders


def _namespace_flags(capabilities: Capabilities, mount: bool, pid: bool) -> list[str]:
    flags = [] if capabilities.root else ["--user", "--map-root-user"]
    if capabilities.network_namespace:
        flags.append("--net")
    if mount:
        flags += ["--mount", "--propagation", "private"]
    if pid:
        # --kill-child: the namespace's init dies with unshare, even if unshare is SIGKILLed
        flags += ["--pid", "--fork", "--kill-child", "--mount-proc"]
    return flags


def _encoded(files: Mapping[str, str | bytes]) -> dict[str, bytes]:
    return {name: data.encode() if isinstance(data, str) else data for name, data in files.items()}


class _Collector:
    """Reads the four pipes of a run until they close, keeping bounded tails, and kills the whole
    process tree at the deadline."""

    def __init__(
        self, sandbox: Sandbox, process: subprocess.Popen[bytes], status: int, reply: int
    ) -> None:
        self.sandbox = sandbox
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.status = bytearray()
        self.reply = bytearray()
        self.reply_overflow = False
        self.timed_out = False
        assert process.stdout is not None and process.stderr is not None
        self._streams = {
            process.stdout.fileno(): (self.stdout, sandbox.output_bytes, True),
            process.stderr.fileno(): (self.stderr, sandbox.output_bytes, True),
            status: (self.status, 1 << 16, False),
            reply: (self.reply, sandbox.result_bytes, False),
        }
        self._owned = (status, reply)

    def wait(self, deadline: float, clean_up: Any) -> None:
        """Collect until every pipe is closed and the process is reaped; at ``deadline`` kill
        the process group (in a PID namespace, its init: then the kernel kills the rest).
        ``clean_up`` kills what may be left outside a PID namespace."""
        selector = selectors.DefaultSelector()
        for descriptor in self._streams:
            os.set_blocking(descriptor, False)
            selector.register(descriptor, selectors.EVENT_READ)
        cleaned_at: float | None = None
        try:
            while selector.get_map():
                now = time.monotonic()
                if not self.timed_out and now >= deadline:
                    self.timed_out = True
                    self._kill()
                if cleaned_at is None and self.process.poll() is not None:
                    clean_up()
                    cleaned_at = time.monotonic()
                if cleaned_at is not None and time.monotonic() > cleaned_at + _GRACE:
                    break  # an escaped process holds a pipe; it has been killed, stop waiting
                wait = max(0.0, min(0.1, deadline - now)) if not self.timed_out else 0.1
                for key, _ in selector.select(wait):
                    self._read(selector, key.fd)
        finally:
            selector.close()
            if self.process.poll() is None:
                self._kill()
            self.process.wait()
            if cleaned_at is None:
                clean_up()
            for descriptor in self._owned:
                os.close(descriptor)
            assert self.process.stdout is not None and self.process.stderr is not None
            self.process.stdout.close()
            self.process.stderr.close()

    def _read(self, selector: selectors.BaseSelector, descriptor: int) -> None:
        buffer, bound, tail = self._streams[descriptor]
        try:
            data = os.read(descriptor, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            selector.unregister(descriptor)
            return
        buffer += data
        if len(buffer) > bound:
            if tail:
                del buffer[: len(buffer) - bound]
            else:
                # keep draining (a blocked writer would only hang until the deadline) but not
                # keeping: the reply is refused as a whole
                self.reply_overflow = self.reply_overflow or buffer is self.reply
                del buffer[bound:]

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_user(uid: int, capabilities: Capabilities) -> None:
    """Kill every process of the sandbox user ``uid`` (what escaped the process group: a
    double-forked daemon), by a helper that becomes that user and signals everything it may."""
    if not capabilities.root:
        return  # without root there is a PID namespace, whose end kills everything
    # the shell's kill(-1) signals every process the caller may signal (only this user's),
    # sparing the caller; repeated while it finds some, since a fork bomb forks between signals
    loop = "i=0; while [ $i -lt 50 ] && kill -9 -1 2>/dev/null; do i=$((i+1)); done"
    subprocess.run(
        ["/bin/sh", "-c", loop],
        user=uid,
        group=uid,
        extra_groups=[],
        env={},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
        cwd="/",
    )


def _json(data: bytearray) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _text(data: bytearray) -> str:
    return data.decode("utf-8", errors="replace")


def _last_line(data: bytearray) -> str:
    lines = _text(data).strip().splitlines()
    return lines[-1] if lines else "(no output)"
