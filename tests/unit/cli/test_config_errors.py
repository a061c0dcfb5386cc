"""Every command answers a configuration problem with one line and exit status 1, never a
traceback (issue 12): invalid TOML, invalid environment values, bad URLs, a data folder that
is a file, an unreachable database, damaged generated secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cloudfilm.cli.main import cli


def _leaf_commands() -> Iterator[tuple[list[str], click.Command]]:
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                leaf = command.get_command(ctx, sub)
                assert leaf is not None
                yield [name, sub], leaf
        else:
            yield [name], command


def _dummy(param: click.Parameter, folder: Path) -> str:
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    if isinstance(param.type, click.Path):
        return str(folder if param.type.dir_okay else folder / "file.out")
    if isinstance(param.type, click.DateTime):
        return "2030-01-01"
    if param.type.name in ("integer", "float"):
        return "1"
    return "X1"


def _argv(path: list[str], command: click.Command, data: Path, folder: Path) -> list[str]:
    argv = [*path, "--data", str(data)]
    for param in command.params:
        if isinstance(param, click.Argument):
            argv.append(_dummy(param, folder))
        elif isinstance(param, click.Option) and param.required:
            argv += [param.opts[0], _dummy(param, folder)]
    return argv


# Every command that works on the platform's data (the gateway has its own config file,
# tested in tests/unit/gateway/test_gateway_cli.py).
COMMANDS = [(p, c) for p, c in _leaf_commands() if any(o.name == "data" for o in c.params)]


def _assert_one_line(result: click.testing.Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ")
    assert expected in lines[-1]


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_reports_invalid_toml_in_one_line(
        path: list[str], command: click.Command, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cloudfilm.toml"
    config.write_text("[http]\nport = \n")
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(config))
    result = CliRunner().invoke(cli, _argv(path, command, tmp_path / "data", tmp_path),
                                input="A-long-passw0rd-here\n" * 4)  # commands that prompt
    _assert_one_line(result, "is not valid TOML")


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_reports_an_invalid_environment_value(
        path: list[str], command: click.Command, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFILM_DIMSE__PORT", "eleven")
    result = CliRunner().invoke(cli, _argv(path, command, tmp_path / "data", tmp_path),
                                input="A-long-passw0rd-here\n" * 4)  # commands that prompt
    _assert_one_line(result, "CLOUDFILM_DIMSE__PORT")


PROBLEMS = {
    "value in the TOML file": ({"CLOUDFILM_CONFIG": "{toml}"}, "CLOUDFILM_HTTP__PORT"),
    "section that is not JSON": ({"CLOUDFILM_HTTP": "{port"}, "field \"http\""),
    "database URL": ({"CLOUDFILM_DATABASE_URL": "not a url"}, "CLOUDFILM_DATABASE_URL"),
    "database driver": ({"CLOUDFILM_DATABASE_URL": "nosuchdb://x/y"}, "CLOUDFILM_DATABASE_URL"),
    "unreachable database": (
        {"CLOUDFILM_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"},
        "cannot open the index database postgresql+psycopg://u:***@127.0.0.1:1/x"),
    "storage URL": ({"CLOUDFILM_STORAGE_URL": "ftp://host/x"}, "CLOUDFILM_STORAGE_URL"),
    "data folder is a file": ({"CLOUDFILM_DATA_DIR": "{file}"}, "CLOUDFILM_DATA_DIR"),
    "damaged secrets.toml": ({}, "secrets"),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("argv", [["db", "upgrade"], ["hospitals", "list"], ["serve"],
                                  ["dimse"], ["storage", "sweep"]])
def test_problems_past_the_settings_are_one_line(
        problem: str, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, expected = PROBLEMS[problem]
    toml = tmp_path / "cloudfilm.toml"
    toml.write_text('[http]\nport = "eighty"\n')
    afile = tmp_path / "afile"
    afile.write_text("")
    data = tmp_path / "data"
    if argv == ["db", "upgrade"] and problem in ("damaged secrets.toml", "storage URL"):
        pytest.skip("db upgrade reads neither secrets nor blobs")
    if problem == "damaged secrets.toml":
        data.mkdir()
        (data / "secrets.toml").write_text("admin_token = [\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("{toml}", str(toml)).replace("{file}", str(afile)))
    if "CLOUDFILM_DATA_DIR" not in env:
        argv = [*argv, "--data", str(data)]
    # A wrong setting must stop the command before it listens on any port.
    if problem not in ("value in the TOML file", "section that is not JSON"):
        monkeypatch.setenv("CLOUDFILM_HTTP__PORT", "1")
    result = CliRunner().invoke(cli, argv)
    _assert_one_line(result, expected)
    assert "hunter2" not in result.output
