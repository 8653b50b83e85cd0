"""Bad limits and bad programs are refused before anything runs, as typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from densereward.core.errors import ConfigError, DenseRewardError
from densereward.sandbox import Capabilities, Program, Sandbox, SandboxUnavailable, probe


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", 0),
        ("timeout", -1.0),
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("cpu_seconds", 0),
        ("memory_mb", 0),
        ("memory_mb", 8),
        ("max_processes", 0),
        ("max_open_files", -3),
        ("max_file_mb", 1.5),
        ("scratch_mb", True),
        ("output_bytes", 0),
        ("result_bytes", 0),
    ],
)
def test_limits_that_are_not_positive_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"sandbox.{field}"):
        Sandbox(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("packages", [("no_such_package_here",), ("numpy.linalg",), ("",)])
def test_packages_that_are_not_installed_top_level_packages_are_refused(
    packages: tuple[str, ...],
) -> None:
    with pytest.raises(ConfigError, match=r"sandbox\.packages"):
        Sandbox(packages=packages).run_source("result = 1")


@pytest.mark.parametrize(
    ("program", "where"),
    [
        (dict(source="x", function="not a name"), "program.function"),
        (dict(source="x", args=(1,)), "program.args"),
        (dict(source="x", function="f", args=(object(),)), "program.args"),
        (dict(source="x", files={"../up.py": "x"}), "program.files"),
        (dict(source="x", files={"/abs.py": "x"}), "program.files"),
        (dict(source="x", files={".request.json": "{}"}), "program.files"),
        (dict(source="x", files={"program.py": "x"}), "program.files"),
        (dict(source="x", files={".packages/numpy/__init__.py": "x"}), "program.files"),
    ],
)
def test_bad_programs_are_refused(program: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        Program(**program)  # type: ignore[arg-type]


def test_missing_or_unreadable_files_are_refused_as_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        Program.from_file(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match="is a folder"):
        Program.from_file(tmp_path)
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Program.from_file(tmp_path / "binary.py")


def test_program_file_keeps_its_name() -> None:
    assert Program.from_file(__file__).name == "test_validation.py"


def test_probe_is_a_frozen_description_of_this_machine() -> None:
    capabilities = probe()
    assert isinstance(capabilities, Capabilities) and probe() is capabilities
    assert Path(capabilities.interpreter).exists()
    assert ".venv" not in capabilities.interpreter


def test_unavailable_sandbox_is_a_densereward_error() -> None:
    assert issubclass(SandboxUnavailable, DenseRewardError)
