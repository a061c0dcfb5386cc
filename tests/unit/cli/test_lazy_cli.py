"""``cloudfilm --help`` loads no heavy library; lazy commands keep their names and help."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cloudfilm.cli.main import LAZY_COMMANDS, cli

HEAVY = ("sqlalchemy", "pydicom", "fastapi", "pynetdicom", "alembic", "cloudfilm.services",
         "cloudfilm.infrastructure", "cloudfilm.interfaces", "cloudfilm.app")


def _imported_modules(*args: str) -> set[str]:
    # -X importtime names every module the process imports, on stderr.
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cloudfilm.cli.main", *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:")}


def test_help_imports_no_heavy_module() -> None:
    modules = _imported_modules("--help")
    assert "click" in modules  # the parse worked: the check can fail
    heavy = sorted(m for m in modules if m.startswith(HEAVY))
    assert heavy == []


def test_a_group_help_loads_only_its_module() -> None:
    # importlib.import_module() bypasses -X importtime for the module itself, not for what
    # it imports: cloudfilm.cli.audit imports the service errors.
    modules = _imported_modules("audit", "--help")
    assert "cloudfilm.services.errors" in modules
    assert "cloudfilm.cli.recognition" not in modules
    assert not any(m.startswith(("fastapi", "pynetdicom")) for m in modules)


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_lazy_summary_is_the_commands_docstring(name: str) -> None:
    command = cli.load(name)
    assert command.name == name
    assert " ".join((command.help or "").split()) == " ".join(LAZY_COMMANDS[name][1].split())


def test_help_lists_every_command_as_a_loaded_group_would() -> None:
    listed = CliRunner().invoke(cli, ["--help"])
    assert listed.exit_code == 0
    lines = listed.output.split("Commands:")[1].splitlines()
    longest = max(len(n) for n in cli.list_commands(click.Context(cli)))
    for name in [*LAZY_COMMANDS, "serve", "dimse", "peers", "import", "db", "storage"]:
        row = next(line for line in lines if line.strip().split(" ")[0] == name)
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert row.split(None, 1)[1] == command.get_short_help_str(80 - 6 - longest)


def test_unknown_command_is_still_refused() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
