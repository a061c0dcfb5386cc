"""``security.local_mode``: who may call without credentials, decided at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfilm.app import local_access
from cloudfilm.config import ConfigError, SecuritySettings, Settings

PG = "postgresql://cloudfilm@db.example/cloudfilm"


def test_embedded_sqlite_is_open_to_loopback_only(tmp_path: Path) -> None:
    local = local_access(Settings(data_dir=tmp_path))
    assert local.open and local.clients == frozenset({"127.0.0.1", "::1"})


def test_server_database_is_closed_by_default() -> None:
    assert not local_access(Settings(database_url=PG)).open


def test_open_with_a_server_database_needs_the_explicit_override() -> None:
    with pytest.raises(ConfigError, match="ALLOW_OPEN_LOCAL_MODE"):
        local_access(Settings(database_url=PG, security=SecuritySettings(local_mode="open")))
    allowed = SecuritySettings(local_mode="open", allow_open_local_mode=True)
    assert local_access(Settings(database_url=PG, security=allowed)).open


def test_closed_wins_on_sqlite(tmp_path: Path) -> None:
    closed = SecuritySettings(local_mode="closed")
    assert not local_access(Settings(data_dir=tmp_path, security=closed)).open
