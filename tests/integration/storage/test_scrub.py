"""The integrity scrubber: a flipped byte is found, counted, recorded and repaired from the
replica store; without a replica it is reported (exit status 1). Also re-encoding on S3
(moto's server) with an S3 replica."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from sqlalchemy import select
from tests.conftest import settings_to_env
from tests.factories import make_ct, to_bytes
from tests.moto_s3 import moto_s3

from cloudfilm.app import build_services
from cloudfilm.cli.main import cli
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Instance
from cloudfilm.infrastructure.dicom.lossless import pixels_equal
from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")


def _store(services: Services, tmp_path: Path, n: int) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = to_bytes(make_ct(instance_number=i + 1, size=64))
        path = tmp_path / f"o{i}.dcm"
        path.write_bytes(data)
        out[services.ingest.ingest_file(path, sender=SENDER).sop_instance_uid] = data
    return out


def _key_of(services: Services, uid: str) -> str:
    with services.health._db.read() as session:
        return str(session.scalars(select(Instance.blob_key)
                                   .where(Instance.sop_instance_uid == uid)).one())


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _mismatches() -> float:
    return REGISTRY.get_sample_value("cloudfilm_storage_scrub_mismatches_total") or 0.0


def test_scrubber_detects_a_flipped_byte_and_repairs_from_the_replica(
        settings: Settings, tmp_path: Path) -> None:
    replicated = settings.model_copy(update={"storage": StorageSettings(
        replica_url=str(tmp_path / "replica"))})
    services = build_services(replicated)
    storage = services.storage
    assert storage is not None
    blobs = services.retrieve._blobs
    assert isinstance(blobs, MirroredBlobStore)
    stored = _store(services, tmp_path, 3)
    victim = next(iter(stored))
    key = _key_of(services, victim)
    primary = blobs.primary.local_path(key)
    assert primary is not None and blobs.replica.local_path(key) is not None
    _flip(primary)
    before = _mismatches()
    report = storage.verify()
    assert report.checked == 3
    assert report.mismatches == [victim] and report.repaired == [victim]
    assert _mismatches() == before + 1
    assert hashlib.sha256(primary.read_bytes()).hexdigest() == \
        hashlib.sha256(stored[victim]).hexdigest()
    assert storage.check_of(victim) == (True, True, "sha256")
    assert storage.verify().mismatches == []  # repaired for good
    services.health._db.dispose()


def test_without_a_replica_damage_is_reported_not_hidden(
        settings: Settings, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = build_services(settings)
    stored = _store(services, tmp_path, 2)
    victim = next(iter(stored))
    path = services.retrieve._blobs.local_path(_key_of(services, victim))
    assert path is not None
    _flip(path)
    settings_to_env(monkeypatch, settings, db_url)
    result = CliRunner().invoke(cli, ["storage", "verify", "--rate", "100000000"])
    assert result.exit_code == 1, result.output
    assert "1 mismatched" in result.output and f"damaged: {victim}" in result.output
    assert services.storage is not None
    assert services.storage.check_of(victim) == (False, False, "sha256")
    # a damaged blob is never re-encoded: the job fails, nothing replaces the original
    path.unlink()
    assert services.storage.verify().missing == [victim]
    services.health._db.dispose()


def test_rate_limit_paces_the_scrubber(settings: Settings, tmp_path: Path) -> None:
    services = build_services(settings)
    _store(services, tmp_path, 3)
    slept: list[float] = []
    assert services.storage is not None
    report = services.storage.verify(bytes_per_second=1024, sleep=slept.append)
    # about report.bytes / 1024 seconds of pauses in all (the clock runs on meanwhile)
    assert report.bytes > 3 * 8192
    assert sum(slept) > report.bytes / 1024 * 0.5
    services.health._db.dispose()


# -- S3 (moto's server over real HTTP) --------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with moto_s3() as started:
        yield started


def _bucket_url(s3: tuple[str, Any]) -> str:
    endpoint, admin = s3
    bucket = f"cloudfilm-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    return (f"s3://{bucket}/archive?endpoint_url={endpoint}&region=us-east-1"
            "&access_key=testing&secret_key=testing")


def test_reencoding_and_repair_on_s3(settings: Settings, tmp_path: Path,
                                     s3: tuple[str, Any]) -> None:
    on_s3 = settings.model_copy(update={
        "storage_url": _bucket_url(s3),
        "storage": StorageSettings(compress=True, delete_grace_seconds=0,
                                   replica_url=_bucket_url(s3))})
    services = build_services(on_s3)
    storage = services.storage
    assert storage is not None
    stored = _store(services, tmp_path, 2)
    assert storage.run_pending() == {"done": 2}
    blobs = services.retrieve._blobs
    assert isinstance(blobs, MirroredBlobStore)
    for uid, original in stored.items():
        key = _key_of(services, uid)
        assert pixels_equal(b"".join(blobs.primary.iter_chunks(key)), original)
        assert not blobs.primary.exists(_sha_key(original))
        assert not blobs.replica.exists(_sha_key(original))  # deleted from both copies
    victim = next(iter(stored))
    key = _key_of(services, victim)
    good = b"".join(blobs.primary.iter_chunks(key))
    broken = tmp_path / "broken"
    broken.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    blobs.primary.put_file(key, broken)
    report = storage.verify()
    assert report.repaired == [victim]
    assert b"".join(blobs.primary.iter_chunks(key)) == good
    services.health._db.dispose()


def _sha_key(data: bytes) -> str:
    from cloudfilm.infrastructure.storage.base import blob_key

    return blob_key(hashlib.sha256(data).hexdigest())
