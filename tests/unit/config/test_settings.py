"""Settings: defaults, environment, TOML file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfilm.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CLOUDFILM_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_platform(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/index.sqlite3"
    assert settings.effective_storage_url == str(tmp_path.resolve() / "blobs")
    assert (settings.http.port, settings.dimse.port) == (8042, 11112)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFILM_DATABASE_URL", "postgresql://u@db/cf")
    monkeypatch.setenv("CLOUDFILM_HTTP__PORT", "9000")
    monkeypatch.setenv("CLOUDFILM_DIMSE__AE_TITLE", "PROVINCE")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db/cf"
    assert settings.http.port == 9000
    assert settings.dimse.ae_title == "PROVINCE"


def test_toml_file_under_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cloudfilm.toml"
    config.write_text('storage_url = "s3://bucket/x"\n[http]\nport = 7000\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(config))
    monkeypatch.setenv("CLOUDFILM_HTTP__PORT", "7100")
    settings = load_settings()
    assert settings.storage_url == "s3://bucket/x"
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 7100)


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("CLOUDFILM_HTTP__PORT", "eighty", "CLOUDFILM_HTTP__PORT"),
        ("CLOUDFILM_HTTP__PORT", "70000", "CLOUDFILM_HTTP__PORT"),
        ("CLOUDFILM_DIMSE__AE_TITLE", "A_TITLE_FAR_TOO_LONG", "CLOUDFILM_DIMSE__AE_TITLE"),
        # Not a traceback from building the app later: one message naming the setting.
        ("CLOUDFILM_HTTP__METRICS_CLIENTS", '["prometheus"]', "METRICS_CLIENTS"),
        ("CLOUDFILM_HTTP__TRUSTED_PROXIES", '["10.0.0.0/33"]', "TRUSTED_PROXIES"),
    ],
)
def test_wrong_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_unreadable_or_invalid_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="CLOUDFILM_CONFIG"):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\nport=")
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()
