"""``cloudfilm ai`` (register, approve, enable, worklist, run, results) and the huey task
that runs in-process plug-ins (immediate mode: the same code path as a worker process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import settings_to_env

from cloudfilm.cli.main import cli
from cloudfilm.config import Settings
from cloudfilm.services.container import Services
from cloudfilm.worker import HueyJobQueue, _ai

from .test_ai import NIDS, NODULES, _chest, _ingest, services, settings  # noqa: F401


def test_cli(services: Services, settings: Settings, db_url: str,  # noqa: F811
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_AI__SETTLE_SECONDS", "0")
    runner = CliRunner()

    def run(*args: str) -> object:
        result = runner.invoke(cli, ["ai", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    algo = run("register", "--name", "lung-nodules", "--version", "0.1", "--kind", "plugin",
               "--plugin", "builtin:lung-nodules", "--intended-use", "demonstration",
               "--modality", "CT", "--body-part", "chest")
    aid = algo["id"]  # type: ignore[index]
    assert algo["body_parts"] == ["CHEST"]  # type: ignore[index]
    bad = runner.invoke(cli, ["ai", "enable", aid, "HZ1"])
    assert bad.exit_code != 0 and "not approved" in bad.output
    run("approve", aid)
    assert run("enable", aid, "HZ1")["hospitals"] == ["HZ1"]  # type: ignore[index]
    study = _ingest(services, tmp_path, _chest(NIDS[0], NODULES))
    assert run("run") == {"COMPLETED": 1}
    [item] = run("worklist")  # type: ignore[misc]
    assert item["state"] == "COMPLETED" and item["study_instance_uid"] == study
    results = run("results", study)
    assert len(results) == 2  # type: ignore[arg-type]  # SR and SEG
    for result in results:  # type: ignore[attr-defined]
        assert len(result["findings"]) == 2 and result["ai_generated"] is True
    # A re-run: a new workitem (run 2) whose results are version 2; version 1 is kept,
    # marked superseded.
    again = run("rerun", aid, study)
    assert again["state"] == "COMPLETED"  # type: ignore[index]
    results = run("results", study)
    assert sorted((r["result_version"], r["superseded"]) for r in results) == [  # type: ignore[attr-defined]
        (1, True), (1, True), (2, False), (2, False)]


def test_huey_runs_the_plugin(services: Services, settings: Settings,  # noqa: F811
                              tmp_path: Path) -> None:
    assert services.ai is not None
    reg = services.ai.registry
    from cloudfilm.services.access.actor import LOCAL_OPERATOR
    from cloudfilm.services.ai.registry import AlgorithmInput

    view, _ = reg.register(LOCAL_OPERATOR, AlgorithmInput(
        name="lung-nodules", version="0.1", kind="plugin", plugin="builtin:lung-nodules",
        intended_use="demonstration", modalities=("CT",)))
    reg.approve(LOCAL_OPERATOR, view.id)
    reg.enable(LOCAL_OPERATOR, view.id, "HZ1")
    study = _ingest(services, tmp_path, _chest(NIDS[0], NODULES))
    queue = HueyJobQueue(settings, immediate=True)
    # The relay the worker runs every few seconds: schedule, then hand over to huey.
    assert _ai(settings).relay(queue) == 1
    [item] = services.ai.work.search(LOCAL_OPERATOR)
    assert item.state == "COMPLETED" and item.study_instance_uid == study
    assert _ai(settings).relay(queue) == 0  # handed over once
