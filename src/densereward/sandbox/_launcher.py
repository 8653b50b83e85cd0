"""The sandbox's inside: a supervisor that sets up the scratch directory and forks the worker that
runs the program.

This file is copied into the scratch directory and run as a script by an isolated interpreter
(``python -I -S -u``), so it imports only the standard library, never densereward. Its one argument
is the scratch directory, which holds ``.request.json`` (written by :mod:`densereward.sandbox.run`).

Two pipes lead back to the caller. The *status* pipe is held only by the supervisor (the worker
closes it first thing), so the program cannot forge its exit status, signal or CPU time. The
*result* pipe carries the worker's JSON reply: the program's value, or the exception that ended it.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import os
import resource
import runpy
import sys
import traceback
from typing import Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

_OPTION_FLAGS = {
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

libc = ctypes.CDLL(None, use_errno=True)


def _check(code: int, what: str) -> None:
    if code != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None) -> None:
    code = libc.mount(_bytes(source), _bytes(target), _bytes(kind), flags, _bytes(data))
    _check(code, f"mount {target}")


def _mount_points() -> list[tuple[str, int]]:
    """Every mount point of this (new) mount namespace with the flags to keep when it is remounted."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            # mountinfo escapes spaces and the like as octal (\040)
            point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode()
            keep = 0
            for option in fields[5].split(","):
                keep |= _OPTION_FLAGS.get(option, 0)
            points.append((point, keep))
    return points


def _make_filesystem_read_only() -> None:
    """Remount every mount of this namespace read-only and nosuid (the host's mounts are not
    touched: the namespace holds copies). ``/proc`` is the namespace's own; devices stay usable
    (a read-only mount still lets ``/dev/null`` be written)."""
    for point, keep in _mount_points():
        if point == "/proc" or point.startswith("/proc/"):
            continue
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep, None)


def _write_file(path: str, data: bytes, uid: int, gid: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)
    os.chown(path, uid, gid)


def _set_up(request: dict[str, Any]) -> None:
    """Scratch directory (a size-bounded tmpfs when there is a mount namespace), the program and
    its files in it, the interpreter exposed read-only when the sandbox user could not reach it."""
    scratch = request["scratch"]
    uid, gid = request["uid"], request["gid"]
    if request["mount"]:
        _make_filesystem_read_only()
        inodes = 4096
        _mount(
            "tmpfs",
            scratch,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"size={request['scratch_mb']}m,nr_inodes={inodes},mode=0700,uid={uid},gid={gid}",
        )
        if request["bind_prefix"]:
            target = os.path.join(scratch, ".python")
            os.mkdir(target, 0o755)
            _mount(request["prefix"], target, None, MS_BIND, None)
            _mount(
                None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None
            )
    else:
        os.chown(scratch, uid, gid)
        os.chmod(scratch, 0o700)
        for name in (".request.json", ".launcher.py"):
            os.unlink(os.path.join(scratch, name))
    _expose_packages(request)
    for name, text in request["files"].items():
        _write_file(os.path.join(scratch, name), base64.b64decode(text), uid, gid)


def _expose_packages(request: dict[str, Any]) -> None:
    """Each allowed package under ``.packages/``: bound read-only where there is a mount
    namespace (it is readable even where the sandbox user could not reach it), linked otherwise."""
    if not request["packages"]:
        return
    folder = os.path.join(request["scratch"], ".packages")
    os.mkdir(folder, 0o755)
    for name, source in request["packages"]:
        target = os.path.join(folder, name)
        if request["mount"]:
            os.mkdir(target, 0o755)
            _mount(source, target, None, MS_BIND, None)
            _mount(
                None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None
            )
        else:
            os.symlink(source, target)


def _drop_privileges(request: dict[str, Any]) -> None:
    """No new privileges (setuid binaries stay powerless), an empty capability bounding set, then
    the sandbox user (as root) and no capabilities at all (in a user namespace too)."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            raise OSError(ctypes.get_errno(), "drop capability bounding set")
    if request["switch_user"]:
        os.setgroups([])
        os.setresgid(request["gid"], request["gid"], request["gid"])
        os.setresuid(request["uid"], request["uid"], request["uid"])

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header, data = Header(LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _set_limits(limits: dict[str, int]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))


def _limit_of(error: BaseException) -> str | None:
    """Which limit an exception comes from, looking through the exceptions it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return "memory"
        if isinstance(current, OSError):
            if current.errno in (errno.EMFILE, errno.ENFILE):
                return "open_files"
            if current.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
                return "file_size"
            if current.errno == errno.EAGAIN and isinstance(current, BlockingIOError):
                return "processes"  # fork() and clone() fail with EAGAIN past RLIMIT_NPROC
        if isinstance(current, RuntimeError) and "can't start new thread" in str(current):
            return "processes"
        current = current.__cause__ or current.__context__
    return None


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


def _call(request: dict[str, Any]) -> Any:
    path = os.path.join(request["scratch"], request["name"])
    function = request["function"]
    if function is None:
        return runpy.run_path(path, run_name="__main__").get("result")
    namespace = runpy.run_path(path, run_name="__sandbox__")
    target = namespace.get(function)
    if not callable(target):
        raise LookupError(f"{request['name']} defines no function {function!r}")
    return target(*request["args"], **request["kwargs"])


def _work(request: dict[str, Any], result_fd: int) -> None:
    """The worker: drop to the sandbox user under the limits, run the program, reply; never
    returns. Processes the program forks inherit this frame, so only the worker itself replies."""
    worker = os.getpid()
    code = 0
    try:
        _enter(request, result_fd)
    except BaseException as error:  # the sandbox, not the program, failed
        _reply(result_fd, json.dumps({"setup_error": _describe(error)}))
        os._exit(125)
    try:
        try:
            value = _call(request)
        except SystemExit as stop:
            if stop.code not in (None, 0):
                raise
            value = None
    except BaseException as error:  # everything the program raises is its reply
        if os.getpid() != worker:
            os._exit(1)
        code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1
        try:
            traceback.print_exception(type(error), error, error.__traceback__)
            text = json.dumps({"ok": False, "error": _describe(error), "limit": _limit_of(error)})
        except BaseException:  # e.g. no memory left to describe it
            text = '{"ok": false, "error": "MemoryError", "limit": "memory"}'
    else:
        if os.getpid() != worker:
            os._exit(0)
        try:
            text = json.dumps({"ok": True, "value": value})
        except (TypeError, ValueError, RecursionError) as error:
            code = 1
            problem = f"the value is not JSON: {_describe(error)}"
            text = json.dumps({"ok": False, "error": problem, "limit": None})
        except MemoryError:
            code = 1
            text = '{"ok": false, "error": "MemoryError", "limit": "memory"}'
    if os.getpid() != worker:
        os._exit(code)
    try:
        _reply(result_fd, text)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _reply(result_fd: int, text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(result_fd, data) :]


def _enter(request: dict[str, Any], result_fd: int) -> None:
    """Become the sandboxed program: limits, sandbox user, scratch directory as the working
    directory and first import path, the interpreter's own paths where the user can read them."""
    os.set_inheritable(result_fd, False)
    scratch = request["scratch"]
    _set_limits(request["limits"])
    _drop_privileges(request)
    os.chdir(scratch)
    os.umask(0o077)
    prefix, visible = request["prefix"], request["visible_prefix"]

    def moved(path: str) -> str:
        return visible + path[len(prefix) :] if path.startswith(prefix) else path

    sys.path[:] = [scratch] + [moved(entry) for entry in sys.path]
    if request["packages"]:
        sys.path.append(os.path.join(scratch, ".packages"))
    sys.executable = moved(sys.executable)
    if visible != prefix:
        # the interpreter finds libpython by an absolute run path the sandbox user cannot reach
        os.environ["LD_LIBRARY_PATH"] = os.path.join(visible, "lib")
    for module in list(sys.modules.values()):
        # packages imported before the switch (encodings) find their submodules by __path__
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [moved(entry) for entry in search]
    sys.path_importer_cache.clear()
    sys.argv[:] = [os.path.join(scratch, request["name"])]
    # last: the address-space limit would otherwise bind the setup itself
    memory = request["limits"]["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def main() -> None:
    """The supervisor: set up, fork the worker, wait for it, report its end on the status pipe.

    In a PID namespace the supervisor is its init: when it returns, the kernel kills every process
    left in the namespace (the program's orphans included)."""
    scratch = sys.argv[1]
    with open(os.path.join(scratch, ".request.json"), encoding="utf-8") as file:
        request = json.load(file)
    status_fd, result_fd = request["status_fd"], request["result_fd"]
    try:
        _set_up(request)
    except Exception as error:  # reported to the caller as an unusable sandbox
        _report(status_fd, {"setup_error": _describe(error)})
        return
    worker = os.fork()
    if worker == 0:
        os.close(status_fd)
        _work(request, result_fd)
    os.close(result_fd)
    _, status, usage = os.wait4(worker, 0)
    _report(
        status_fd,
        {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
        },
    )


def _report(status_fd: int, status: dict[str, Any]) -> None:
    data = json.dumps(status).encode()
    while data:
        data = data[os.write(status_fd, data) :]
    os.close(status_fd)


if __name__ == "__main__":
    main()
