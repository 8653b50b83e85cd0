"""Hostile programs in the sandbox: each is stopped by the mechanism meant for it, nothing escapes,
and the caller keeps working after each (every test ends by running an ordinary program)."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from densereward.sandbox import Program, Sandbox, SandboxResult, SandboxUnavailable, probe

ROOT = Path(__file__).resolve().parents[2]

CAPABILITIES = probe()
REFUSAL = CAPABILITIES.refusal()
pytestmark = pytest.mark.skipif(REFUSAL is not None, reason=f"no sandbox here: {REFUSAL}")

QUICK = Sandbox(timeout=5, cpu_seconds=2, memory_mb=256, max_processes=8, max_file_mb=1)


def still_works(sandbox: Sandbox = QUICK) -> None:
    """The caller can still run an ordinary program, and it returns its value."""
    result = sandbox.run_source("import math\nresult = math.factorial(5)")
    assert (result.status, result.value) == ("ok", 120), result


def live_processes_of(uid: int) -> list[int]:
    """Processes (not zombies) whose real uid is ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path("/proc", entry, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(int(entry))
    return found


def test_ordinary_program_returns_its_value_and_output() -> None:
    result = QUICK.run_source("print('hello')\nresult = {'reward': [0.5, 1.0]}")
    assert result.ok and result.value == {"reward": [0.5, 1.0]}
    assert result.stdout == "hello\n" and result.exit_code == 0 and result.limit is None


def test_function_is_called_with_json_arguments() -> None:
    result = QUICK.run_source(
        "def reward(x, scale=1):\n    return [v * scale for v in x]\n",
        "reward",
        ([1, 2],),
        {"scale": 3},
    )
    assert result.value == [3, 6]


def test_exception_is_reported_in_one_line_with_the_traceback_on_stderr() -> None:
    result = QUICK.run_source("def f():\n    return 1 / 0\n", "f")
    assert result.status == "error" and result.error == "ZeroDivisionError: division by zero"
    assert "program.py" in result.stderr and result.value is None


def test_value_that_is_not_json_is_an_error() -> None:
    result = QUICK.run_source("result = object()")
    assert result.status == "error" and "not JSON" in (result.error or "")


def test_bounded_spawn_stops_at_the_process_limit() -> None:
    """Checked before any fork bomb: the process limit binds (as root too), and the forks that
    did succeed die with the sandbox."""
    source = (
        "import os, time\n"
        "for _ in range(20):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
    )
    result = QUICK.run_source(source)
    assert (result.status, result.limit) == ("limit", "processes"), result
    assert result.user is None or live_processes_of(result.user) == []
    still_works()


def test_fork_bomb_is_stopped_by_the_process_limit() -> None:
    result = QUICK.run_source("import os\nwhile True:\n    os.fork()\n")
    assert (result.status, result.limit) == ("limit", "processes"), result
    assert result.user is None or live_processes_of(result.user) == []
    still_works()


def test_fork_bomb_that_ignores_failures_is_killed_at_the_deadline() -> None:
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    started = time.monotonic()
    result = dataclasses.replace(QUICK, timeout=1.5).run_source(bomb)
    assert (result.status, result.limit) == ("limit", "wall"), result
    assert time.monotonic() - started < 6
    assert result.user is None or live_processes_of(result.user) == []
    still_works()


def test_memory_bomb_is_stopped_by_the_memory_limit() -> None:
    result = QUICK.run_source("hoard = []\nwhile True:\n    hoard.append(bytearray(1 << 24))\n")
    assert (result.status, result.limit) == ("limit", "memory"), result
    still_works()


def test_busy_loop_is_stopped_by_the_cpu_limit() -> None:
    result = dataclasses.replace(QUICK, cpu_seconds=1).run_source("while True:\n    pass\n")
    assert (result.status, result.limit) == ("limit", "cpu"), result
    assert result.cpu_seconds >= 0.9 and result.elapsed < 4
    still_works()


def test_sleeping_program_is_killed_at_the_wall_clock_deadline() -> None:
    result = dataclasses.replace(QUICK, timeout=1).run_source("import time\ntime.sleep(60)\n")
    assert (result.status, result.limit) == ("limit", "wall"), result
    assert 1 <= result.elapsed < 4
    still_works()


def test_huge_file_is_stopped_by_the_file_size_limit() -> None:
    result = QUICK.run_source("open('big', 'wb').write(b'x' * (2 << 20))")
    assert (result.status, result.limit) == ("limit", "file_size"), result
    still_works()


def test_many_open_files_are_stopped_by_the_open_file_limit() -> None:
    result = QUICK.run_source("files = [open(f'f{i}', 'w') for i in range(1000)]")
    assert (result.status, result.limit) == ("limit", "open_files"), result
    still_works()


def test_huge_reply_is_refused() -> None:
    result = dataclasses.replace(QUICK, result_bytes=1000).run_source("result = 'x' * 5000")
    assert (result.status, result.limit) == ("limit", "result_size"), result
    still_works()


@pytest.mark.parametrize("target", ["/tmp/densereward-sandbox-escape", str(ROOT / "ESCAPED")])
def test_writes_outside_the_scratch_directory_fail(target: str) -> None:
    result = QUICK.run_source(f"open({target!r}, 'w').write('escaped')")
    assert result.status == "error" and not Path(target).exists(), result
    assert "Read-only file system" in (result.error or "") or "Permission" in (result.error or "")
    still_works()


def test_scratch_directory_is_writable_and_is_the_working_directory() -> None:
    source = (
        "import os, tempfile\n"
        "open('note.txt', 'w').write('kept')\n"
        "with tempfile.NamedTemporaryFile(dir=None) as f: pass\n"
        "result = [open('note.txt').read(), os.getcwd() == os.environ['HOME']]\n"
    )
    assert QUICK.run_source(source).value == ["kept", True]


def test_files_of_the_program_are_in_its_scratch_directory() -> None:
    program = Program("import helper\nresult = helper.VALUE", files={"helper.py": "VALUE = 7"})
    assert QUICK.run(program).value == 7


def test_caller_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENSEREWARD_TEST_SECRET", "hunter2-secret")
    source = (
        "import os\n"
        "seen = [k for k, v in os.environ.items() if 'hunter2' in v or 'SECRET' in k]\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if b'hunter2' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            seen.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "result = [seen, sorted(os.environ)]\n"
    )
    result = QUICK.run_source(source)
    seen, names = result.value
    assert seen == [] and set(names) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "LD_LIBRARY_PATH",
        "PYTHONDONTWRITEBYTECODE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    }


@pytest.mark.skipif(not CAPABILITIES.network_namespace, reason="no network namespace here")
def test_socket_to_a_loopback_server_never_connects() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    arrived: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                arrived.append(server.accept())
            except TimeoutError:
                continue

    listener = threading.Thread(target=accept)
    listener.start()
    try:
        source = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        result = QUICK.run_source(source)
        time.sleep(0.3)
    finally:
        stop.set()
        listener.join()
        server.close()
    assert result.status == "error" and arrived == [], result
    assert result.network_isolated and "unreachable" in (result.error or "")
    still_works()


def test_without_a_network_namespace_the_result_says_the_network_is_not_isolated() -> None:
    sandbox = dataclasses.replace(
        QUICK, capabilities=dataclasses.replace(CAPABILITIES, network_namespace=False)
    )
    result = sandbox.run_source("result = 1")
    assert result.ok and not result.network_isolated
    assert "network_namespace" not in result.mechanisms


def test_killing_the_parent_and_everything_leaves_the_caller_alive() -> None:
    for source in (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\nresult = 'alive'\n",
        "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
    ):
        result = QUICK.run_source(source)
        assert result.status in ("error", "ok"), result  # refused, or it killed only itself
    still_works()


@pytest.mark.parametrize("pid_namespace", [True, False], ids=["pid-namespace", "no-pid-namespace"])
def test_double_forked_daemon_does_not_outlive_the_sandbox(pid_namespace: bool) -> None:
    """With a PID namespace its init takes the daemon with it; without one (as root) every process
    of the run's own user is killed."""
    if not pid_namespace and not CAPABILITIES.root:
        pytest.skip("without a PID namespace only root can clean up by user")
    capabilities = dataclasses.replace(CAPABILITIES, pid_namespace=pid_namespace)
    sandbox = dataclasses.replace(QUICK, capabilities=capabilities)
    marker = Path(f"/tmp/densereward-sandbox-marker-{os.getpid()}")
    source = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(1.0)\n"
        f"        open({str(marker)!r}, 'w').write('outlived')\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "result = 'returned'\n"
    )
    result = sandbox.run_source(source)
    assert result.value == "returned", result
    assert result.user is None or live_processes_of(result.user) == []
    time.sleep(1.5)
    assert not marker.exists()
    still_works(sandbox)


def test_densereward_and_caller_modules_cannot_be_imported(tmp_path: Path) -> None:
    (tmp_path / "caller_module.py").write_text("VALUE = 1\n")
    for source in (
        "import densereward",
        "import torch",
        f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport caller_module\n",
    ):
        result = QUICK.run_source(source)
        assert result.status == "error" and "ModuleNotFoundError" in (result.error or ""), result
    still_works()


def test_map_runs_a_group_concurrently_in_order_each_in_its_own_sandbox() -> None:
    programs = [
        Program("def f(x):\n    return x * x\n", "f", (3,)),
        Program("while True:\n    pass\n"),
        Program("import os\nwhile True:\n    os.fork()\n"),
        Program("result = 'last'"),
    ]
    results = dataclasses.replace(QUICK, cpu_seconds=1).map(programs, concurrency=2)
    assert [r.value for r in results] == [9, None, None, "last"]
    assert [r.limit for r in results] == [None, "cpu", "processes", None]
    users = {r.user for r in results}
    assert None in users or len(users) == 4


def test_machine_without_any_isolation_is_refused() -> None:
    bare = dataclasses.replace(
        CAPABILITIES,
        root=False,
        user_namespace=False,
        network_namespace=False,
        mount_namespace=False,
        pid_namespace=False,
    )
    with pytest.raises(SandboxUnavailable, match="sandbox unavailable: not root"):
        dataclasses.replace(QUICK, capabilities=bare).run_source("result = 1")


def test_result_is_frozen_and_serialises_to_json() -> None:
    import json

    result = QUICK.run_source("result = [1, 2]")
    assert isinstance(result, SandboxResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.value = 3  # type: ignore[misc]
    record = json.loads(json.dumps(result.to_json()))
    assert record["value"] == [1, 2] and record["status"] == "ok"


@pytest.mark.skipif(not CAPABILITIES.mount_namespace, reason="no mount namespace here")
def test_scratch_directory_is_bounded_in_size() -> None:
    sandbox = dataclasses.replace(QUICK, scratch_mb=2, max_file_mb=1)
    source = "for i in range(4):\n    open(f'part{i}', 'wb').write(b'x' * ((1 << 20) - 1))\n"
    result = sandbox.run_source(source)
    assert (result.status, result.limit) == ("limit", "file_size"), result
    assert "No space left" in (result.error or "")
    still_works()


def test_output_is_kept_as_a_bounded_tail() -> None:
    sandbox = dataclasses.replace(QUICK, output_bytes=1000)
    result = sandbox.run_source("import sys\nprint('x' * 3_000_000)\nsys.stderr.write('y' * 5000)")
    assert result.ok and result.stdout == "x" * 999 + "\n" and result.stderr == "y" * 1000


def test_machine_that_cannot_expose_a_private_interpreter_is_refused() -> None:
    private = dataclasses.replace(
        CAPABILITIES, root=True, mount_namespace=False, interpreter_public=False
    )
    with pytest.raises(SandboxUnavailable, match="not readable by an unprivileged user"):
        dataclasses.replace(QUICK, capabilities=private).run_source("result = 1")


@pytest.mark.parametrize("mount_namespace", [True, False])
def test_allowed_package_is_importable_read_only_and_nothing_else_is(
    mount_namespace: bool,
) -> None:
    capabilities = dataclasses.replace(CAPABILITIES, mount_namespace=mount_namespace)
    if capabilities.refusal() is not None:
        pytest.skip("this machine needs a mount namespace")
    sandbox = dataclasses.replace(QUICK, packages=("numpy",), capabilities=capabilities)
    summed = sandbox.run_source(
        "import numpy as np\nresult = float(np.arange(1, 101, dtype=np.float64).sum())"
    )
    assert (summed.status, summed.value) == ("ok", 5050.0), summed
    # the package's own folder cannot be changed: it is the caller's installation
    planted = sandbox.run_source(
        "import os, numpy\nopen(os.path.join(os.path.dirname(numpy.__file__), 'planted.py'), 'w')"
    )
    assert planted.status == "error" and "OSError" in (planted.error or ""), planted
    assert not (Path(__import__("numpy").__file__).parent / "planted.py").exists()
    for other in ("import torch", "import densereward", "import yaml"):
        result = sandbox.run_source(other)
        assert "ModuleNotFoundError" in (result.error or ""), result
    still_works(sandbox)
