"""``cloudfilm demo --gateway`` writes a gateway config the gateway accepts, once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from cloudfilm.cli.demo import _gateway_config
from cloudfilm.config import Settings
from cloudfilm.gateway.config import load_config


def test_gateway_config_is_valid_and_kept_on_a_rerun(tmp_path: Path) -> None:
    issued: list[str] = []

    def issue(code: str, **_: Any) -> Any:
        issued.append(code)
        return SimpleNamespace(token=f"cfh_demo{len(issued)}")

    services = SimpleNamespace(credentials=SimpleNamespace(issue=issue))
    province = SimpleNamespace(hospitals=[SimpleNamespace(code="H001")])
    settings = Settings(data_dir=tmp_path)
    console = Console(file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    _gateway_config(console, services, province, settings)
    _gateway_config(console, services, province, settings)
    path = tmp_path / "gateway" / "gateway.toml"
    config = load_config(path)
    assert issued == ["H001"]  # the rerun reused the file and its credential
    assert config.cloud.credential.get_secret_value() == "cfh_demo1"
    assert config.cloud.url == f"http://127.0.0.1:{settings.http.port}"
    assert config.status.heartbeat_seconds > 0
    assert path.stat().st_mode & 0o077 == 0  # the credential is not world-readable
