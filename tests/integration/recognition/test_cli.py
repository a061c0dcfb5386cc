"""``cloudfilm recognition ...`` on both databases."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from tests.conftest import settings_to_env

from cloudfilm.cli.main import cli
from cloudfilm.config import Settings

from .conftest import Province


def test_cli_rules_check_and_savings(province: Province, settings: Settings, db_url: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_RECOGNITION__SETTLE_MINUTES", "0")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["recognition", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "CT-CHEST" in run("items")
    run("item-set", "CT-CHEST", "--window-days", "20", "--accept",
        "tertiary=tertiary,secondary")
    run("map", "HA", "RIS-77", "ct-chest")
    run("term-set", "body_part", "BECKEN", "PELVIS")
    assert "BECKEN" in run("terms", "--field", "body_part")
    history = run("history")
    assert "local" in history and "HA:RIS-77" in history and "CT-CHEST" in history
    out = run("check", "--hospital", "HA", "--patient-id", "HA-001", "--procedure-code",
              "RIS-77", "--department", "ER")
    # 20-day window, tertiary now accepts secondary: HB 10 days, HC 5 days.
    assert "2 prior(s)" in out and " HC (secondary)" in out and "HB (tertiary)" in out
    decision = out.split()[1].rstrip(":")
    run("decide", decision, "accepted")
    run("performed", decision)
    csv_out = run("savings", "--csv")
    # checks, prompts, accepted, accepted then performed
    assert csv_out.splitlines()[1].startswith(tuple(f"{m},HA,ER,CT-CHEST,1,1,1,1,"
                                                    for m in _months()))
    bad = runner.invoke(cli, ["recognition", "map", "HA", "RIS-78", "NO-SUCH-ITEM"])
    assert bad.exit_code != 0 and "not in the catalogue" in bad.output


def _months() -> list[str]:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    return [f"{datetime.now(UTC).astimezone(ZoneInfo('Asia/Shanghai')):%Y-%m}"]
