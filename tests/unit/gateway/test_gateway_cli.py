"""``cloudfilm gateway check|status|retry`` on a queue folder, in-process."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cloudfilm.cli.main import cli
from cloudfilm.gateway.queue import Meta, Queue

CONFIG = """
[cloud]
url = "http://127.0.0.1:9"
credential = "cfh_test"
[dicom]
allowed_ae_titles = ["PACS"]
[queue]
folder = "q"
"""


def test_check_status_and_retry(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(CONFIG, encoding="utf-8")
    runner = CliRunner()
    checked = runner.invoke(cli, ["gateway", "check", str(config)])
    assert checked.exit_code == 0 and "OK" in checked.output and "cfh_test" not in checked.output
    queue = Queue(tmp_path / "q", quota_bytes=10**9)
    for k in range(2):
        queue.commit(queue.spool(f"o{k}".encode()), Meta(kind="dicom", uid=f"1.{k}",
                                                        study_uid="S"))
    first, _ = queue.claim(batch_size=10, batch_bytes=10**6)
    queue.mark_refused(first, "0xC000 not DICOM enough")
    queue.close()
    status = runner.invoke(cli, ["gateway", "status", str(config)])
    assert status.exit_code == 0, status.output
    assert "refused 1" in status.output and "#1 dicom 1.0: 0xC000 not DICOM enough" in status.output
    figures = json.loads(runner.invoke(cli, ["gateway", "status", str(config), "--json"]).output)
    assert figures["counts"]["refused"] == 1 and figures["parked"][0]["uid"] == "1.0"
    assert runner.invoke(cli, ["gateway", "retry", str(config)]).exit_code != 0
    retried = runner.invoke(cli, ["gateway", "retry", str(config), "1"])
    assert retried.exit_code == 0 and "1 object(s)" in retried.output
    figures = json.loads(runner.invoke(cli, ["gateway", "status", str(config), "--json"]).output)
    assert figures["counts"]["refused"] == 0 and figures["parked"] == []


def test_a_wrong_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(CONFIG.replace("cfh_test", "password"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["gateway", "run", str(config)])
    assert result.exit_code == 1
    assert "cloud.credential: must be the hospital's credential" in result.output
    assert "Traceback" not in result.output
