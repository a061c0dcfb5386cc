"""Backup, wipe, restore: everything served identically. Then the restored embedded index
moves into PostgreSQL (``cloudfilm migrate-index``) and serves the same from there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from tests.conftest import run_tag, throwaway_pg_database
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.cli.main import cli
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Study
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services

pytestmark = pytest.mark.commits

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")


def _everything(services: Services) -> dict[tuple[str, str | None], bytes]:
    """Every object as served whole, both as stored and as a client naming no syntax gets
    it; plus the metadata."""
    with services.health._db.read() as session:
        studies = sorted(session.scalars(select(Study.study_instance_uid)).all())
    out: dict[tuple[str, str | None], bytes] = {}
    for study in studies:
        for obj in services.retrieve.locate(study, actor=LOCAL_OPERATOR):
            for wanted in (None, "*"):
                out[(obj.sop_instance_uid, wanted)] = b"".join(
                    services.retrieve.object_chunks(obj, wanted))
        out[(study, "metadata")] = repr(sorted(
            str(m) for m in services.retrieve.metadata(study, actor=LOCAL_OPERATOR))).encode()
    return out


def test_backup_wipe_restore_serves_everything_identically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_id: str) -> None:
    data = tmp_path / "data"
    for name in ("CLOUDFILM_DATABASE_URL", "CLOUDFILM_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDFILM_DATA_DIR", str(data))
    settings = Settings(data_dir=data,
                        storage=StorageSettings(compress=True, delete_grace_seconds=0))
    services = build_services(settings)
    assert services.storage is not None
    study = make_ct().StudyInstanceUID
    for i in range(4):
        path = tmp_path / f"o{i}.dcm"
        path.write_bytes(to_bytes(make_ct(study_uid=study, instance_number=i + 1, size=64)))
        services.ingest.ingest_file(path, sender=SENDER)
    services.storage.run_pending(limit=2)  # half re-encoded: both kinds in the backup
    before = _everything(services)
    services.health._db.dispose()

    runner = CliRunner()
    result = runner.invoke(cli, ["backup", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "4 blobs" in result.output
    again = runner.invoke(cli, ["backup", str(tmp_path / "backup")])
    assert again.exit_code != 0 and "not empty" in again.output

    shutil.rmtree(data)  # the wipe
    # a damaged backup is refused, not restored
    blob = next((tmp_path / "backup" / "blobs").rglob("*.dcm"))
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    damaged = runner.invoke(cli, ["restore", str(tmp_path / "backup")])
    assert damaged.exit_code != 0 and "damaged" in damaged.output
    blob.write_bytes(good)
    shutil.rmtree(data)
    result = runner.invoke(cli, ["restore", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["restore", str(tmp_path / "backup")]).exit_code != 0

    restored = build_services(Settings(data_dir=data))
    assert _everything(restored) == before
    restored.health._db.dispose()

    # The county hospital grows into the province setup: the same index in PostgreSQL.
    with throwaway_pg_database(f"cloudfilm_migrate_{run_tag(worker_id)}") as pg_url:
        result = runner.invoke(cli, ["migrate-index", "--to", pg_url])
        assert result.exit_code == 0, result.output
        assert runner.invoke(cli, ["migrate-index", "--to", pg_url]).exit_code != 0
        secrets = restored_secrets(data)
        on_pg = build_services(Settings(data_dir=data, database_url=pg_url,
                                        security=secrets))
        assert _everything(on_pg) == before
        # new rows get fresh ids after the copied ones (sequences moved)
        path = tmp_path / "late.dcm"
        path.write_bytes(to_bytes(make_ct(study_uid=study, instance_number=9, size=64)))
        assert on_pg.ingest.ingest_file(path, sender=SENDER).outcome == "stored"
        on_pg.health._db.dispose()


def restored_secrets(data: Path) -> object:
    from cloudfilm.app import resolve_secrets

    return resolve_secrets(Settings(data_dir=data), data)


def test_backup_of_a_tiered_archive_restores_every_blob_hot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    for name in ("CLOUDFILM_DATABASE_URL", "CLOUDFILM_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDFILM_DATA_DIR", str(data))
    monkeypatch.setenv("CLOUDFILM_STORAGE__COLD_URL", str(tmp_path / "cold"))
    settings = Settings(data_dir=data, storage=StorageSettings(
        cold_url=str(tmp_path / "cold"), tier_unread_days=0))
    services = build_services(settings)
    assert services.storage is not None and services.storage.tiers is not None
    study = make_ct().StudyInstanceUID
    for i in range(3):
        path = tmp_path / f"o{i}.dcm"
        path.write_bytes(to_bytes(make_ct(study_uid=study, instance_number=i + 1, size=64)))
        services.ingest.ingest_file(path, sender=SENDER)
    assert services.storage.tiers.plan() == 3  # StudyDate 2024: more than a year ago
    assert services.storage.run_pending() == {"done": 3}
    before = _everything(services)
    services.health._db.dispose()
    runner = CliRunner()
    result = runner.invoke(cli, ["backup", str(tmp_path / "backup")])
    assert result.exit_code == 0 and "3 blobs" in result.output, result.output
    shutil.rmtree(data)
    shutil.rmtree(tmp_path / "cold")  # both tiers lost
    result = runner.invoke(cli, ["restore", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    restored = build_services(settings)
    assert _everything(restored) == before
    assert restored.storage is not None and restored.storage.tiers is not None
    assert set(restored.storage.tiers.counts()) == {"hot"}
    assert restored.storage.verify().mismatches == []
    forecast = runner.invoke(cli, ["storage", "forecast"])
    assert forecast.exit_code == 0 and "hot tier: 3 objects" in forecast.output, \
        forecast.output
    restored.health._db.dispose()
