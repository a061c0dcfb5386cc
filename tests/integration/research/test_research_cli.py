"""``cloudfilm research``: propose, count, approve and export to a file."""

from __future__ import annotations

import json
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import settings_to_env

from cloudfilm.cli.main import cli
from cloudfilm.config import Settings
from cloudfilm.services.container import Services

from .test_research import NIDS, _hospital, _ingest, settings  # noqa: F401 - fixture


def test_cli(services: Services, settings: Settings, db_url: str,  # noqa: F811
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hospital(services)
    _ingest(services, tmp_path, NIDS[0], "Zhang^San0", "CHEST")
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_RESEARCH__K_THRESHOLD", "3")
    runner = CliRunner()

    def run(*args: str) -> object:
        result = runner.invoke(cli, ["research", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    expires = (date.today() + timedelta(days=5)).isoformat()
    project = run("propose", "--title", "CLI", "--pi", "PI", "--institution", "I",
                  "--ethics-ref", "E", "--ethics-expires", expires, "--body-part", "CHEST",
                  "--options", '{"retain_modified_dates": true}')
    pid = project["id"]  # type: ignore[index]
    assert run("counts", pid)["studies"] == "< 3"  # type: ignore[index]
    bad = runner.invoke(cli, ["research", "export", pid, str(tmp_path / "x.zip")])
    assert bad.exit_code != 0 and "not approved" in bad.output
    run("approve", pid)
    assert [p["status"] for p in run("list")] == ["approved"]  # type: ignore[attr-defined,index]
    summary = run("export", pid, str(tmp_path / "out.zip"))
    assert summary["exported"] == 1  # type: ignore[index]
    names = zipfile.ZipFile(tmp_path / "out.zip").namelist()
    assert "manifest.csv" in names and any(n.endswith(".dcm") for n in names)
