"""Hot and cold tiers: old unread studies move cold by jobs, bit-exact; reads stay
transparent; a crash at every step of a move leaves one complete, served copy; legal holds
and recent reads keep a study hot; the cold tier on S3 (moto's server); the scrubber
repairs a cold blob from the replica."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.factories import make_ct, to_bytes
from tests.moto_s3 import moto_s3

from cloudfilm.app import build_services
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Instance, StorageJob
from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore
from cloudfilm.infrastructure.storage.tiered import TieredBlobStore
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.storage.tiers import Tiers

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")
TODAY = datetime.now(UTC).strftime("%Y%m%d")


class Crash(BaseException):
    """Stands for kill -9 at a step: no ``except Exception`` handler sees it."""


def _tiered(settings: Settings, tmp_path: Path, *, cold_url: str | None = None,
            replica: bool = False) -> Services:
    conf = StorageSettings(cold_url=cold_url or str(tmp_path / "cold"), tier_after_days=365,
                           tier_unread_days=30,
                           replica_url=str(tmp_path / "replica") if replica else "")
    return build_services(settings.model_copy(update={"storage": conf}))


def _study(services: Services, tmp_path: Path, n: int, *, date: str = "20200301",
           patient: str = "P1") -> dict[str, bytes]:
    study, series = make_ct().StudyInstanceUID, make_ct().SeriesInstanceUID
    out = {}
    for i in range(n):
        ds = make_ct(study_uid=study, series_uid=series, instance_number=i + 1, size=48,
                     patient_id=patient)
        ds.StudyDate = date
        data = to_bytes(ds)
        path = tmp_path / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(data)
        services.ingest.ingest_file(path, sender=SENDER)
        out[ds.SOPInstanceUID] = data
    return out


def _rows(services: Services) -> dict[str, Any]:
    with services.health._db.read() as session:
        return {r.sop_instance_uid: r for r in session.execute(select(Instance.__table__))}


def _served(services: Services, uid: str) -> bytes:
    row = _rows(services)[uid]
    from cloudfilm.infrastructure.db.models import Study

    with services.health._db.read() as session:
        study = session.scalars(select(Study.study_instance_uid)
                                .where(Study.id == row.study_fk)).one()
    obj = next(o for o in services.retrieve.locate(study, actor=LOCAL_OPERATOR)
               if o.sop_instance_uid == uid)
    return b"".join(services.retrieve.object_chunks(obj, "*"))


def _store(services: Services) -> TieredBlobStore:
    blobs = services.retrieve._blobs
    assert isinstance(blobs, TieredBlobStore)
    return blobs


def _hot(blobs: TieredBlobStore) -> Any:
    return blobs.hot.primary if isinstance(blobs.hot, MirroredBlobStore) else blobs.hot


def test_old_unread_studies_move_cold_and_read_back(settings: Settings,
                                                     tmp_path: Path) -> None:
    services = _tiered(settings, tmp_path, replica=True)
    storage = services.storage
    assert storage is not None and storage.tiers is not None
    old = _study(services, tmp_path, 3)
    recent = _study(services, tmp_path, 1, date=TODAY)
    read = _study(services, tmp_path, 1, patient="P2")
    held = _study(services, tmp_path, 1, patient="P3")
    _served(services, next(iter(read)))  # read now: its audit record keeps it hot
    assert services.lifecycle is not None
    services.lifecycle.place_hold(LOCAL_OPERATOR, reason="court order 2026-17",
                                  hospital_code="H1", patient_id="P3")
    assert storage.tiers.plan() == 3
    assert storage.run_pending() == {"done": 3}
    rows = _rows(services)
    blobs = _store(services)
    for uid, original in old.items():
        assert rows[uid].storage_tier == "cold"
        assert not _hot(blobs).exists(rows[uid].blob_key)
        assert blobs.cold.exists(rows[uid].blob_key)
        assert _served(services, uid) == original  # transparent, bit-exact
    for uid in [*recent, *read, *held]:
        assert rows[uid].storage_tier == "hot"
    assert storage.tiers.counts()["cold"][0] == 3
    # the API says where a series comes from (a cold read may be slower)
    from fastapi.testclient import TestClient

    from cloudfilm.infrastructure.db.models import Study
    from cloudfilm.interfaces.api.http import create_app

    with services.health._db.read() as session:
        uid_of = dict(session.execute(select(Study.id, Study.study_instance_uid)).all())
    client = TestClient(create_app(services))
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    for group, tier in ((old, "cold"), (recent, "hot")):
        study_uid = uid_of[rows[next(iter(group))].study_fk]
        response = client.get(f"/dicomweb/studies/{study_uid}", headers=accept)
        assert response.status_code == 200
        assert response.headers["X-Cloudfilm-Storage-Tier"] == tier
    assert storage.tiers.plan() == 0  # nothing more to move
    # a flipped byte in a cold blob is found and repaired from the replica
    victim = next(iter(old))
    path = blobs.cold.local_path(rows[victim].blob_key)
    assert path is not None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = storage.verify()
    assert report.mismatches == [victim] and report.repaired == [victim]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rows[victim].sha256
    services.health._db.dispose()


STEPS = ["read", "write-cold", "verify-cold", "index", "delete-hot", "done"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_leaves_one_complete_served_copy(
        settings: Settings, tmp_path: Path, step: str) -> None:
    services = _tiered(settings, tmp_path)
    storage = services.storage
    assert storage is not None and storage.tiers is not None
    objects = _study(services, tmp_path, 1)
    uid, original = next(iter(objects.items()))

    def crash(name: str) -> None:
        if name == step:
            raise Crash(name)

    good = storage.tiers
    storage.tiers = Tiers(services.health._db, _store(services), tmp_path,
                          good.policy, step=crash)
    assert good.plan() == 1
    with services.health._db.read() as session:
        job_id = session.scalars(select(StorageJob.id)).one()
    with pytest.raises(Crash):
        storage.run_job(job_id)
    # whatever the step: the object is served, complete and identical
    assert _served(services, uid) == original
    row = _rows(services)[uid]
    blobs = _store(services)
    where = blobs.cold if row.storage_tier == "cold" else _hot(blobs)
    assert hashlib.sha256(b"".join(where.iter_chunks(row.blob_key))).hexdigest() == row.sha256
    # the rerun (the relay hands a silent job over again) finishes the move
    storage.tiers = good
    assert storage.run_job(job_id) == "done"
    row = _rows(services)[uid]
    assert row.storage_tier == "cold"
    assert not _hot(blobs).exists(row.blob_key) and blobs.cold.exists(row.blob_key)
    assert _served(services, uid) == original
    assert not list(tmp_path.glob("tier-*"))  # no temp file left
    services.health._db.dispose()


def test_a_hold_placed_during_a_move_keeps_the_object_hot(settings: Settings,
                                                          tmp_path: Path) -> None:
    services = _tiered(settings, tmp_path)
    storage, lifecycle = services.storage, services.lifecycle
    assert storage is not None and storage.tiers is not None and lifecycle is not None
    objects = _study(services, tmp_path, 1)
    uid = next(iter(objects))
    from cloudfilm.infrastructure.db.models import Study

    with services.health._db.read() as session:
        study = session.scalars(select(Study.study_instance_uid)).one()

    def hold_now(name: str) -> None:
        if name == "index":
            lifecycle.place_hold(LOCAL_OPERATOR, reason="litigation", study_uid=study)

    tiers = Tiers(services.health._db, _store(services), tmp_path, storage.tiers.policy,
                  step=hold_now)
    assert tiers.move_cold(uid) == "left:legal-hold"
    assert _rows(services)[uid].storage_tier == "hot"
    assert _served(services, uid) == objects[uid]
    services.health._db.dispose()


# -- the cold tier in an S3 bucket (moto's server over real HTTP) -----------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with moto_s3() as started:
        yield started


def test_cold_tier_in_an_s3_bucket(settings: Settings, tmp_path: Path,
                                   s3: tuple[str, Any]) -> None:
    endpoint, admin = s3
    bucket = f"cold-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    url = (f"s3://{bucket}/cold?endpoint_url={endpoint}&region=us-east-1"
           "&access_key=testing&secret_key=testing")
    services = _tiered(settings, tmp_path, cold_url=url)
    storage = services.storage
    assert storage is not None and storage.tiers is not None
    objects = _study(services, tmp_path, 2)
    assert storage.tiers.plan() == 2
    assert storage.run_pending() == {"done": 2}
    listed = admin.list_objects_v2(Bucket=bucket)["Contents"]
    assert len(listed) == 2
    for uid, original in objects.items():
        assert _rows(services)[uid].storage_tier == "cold"
        assert _served(services, uid) == original
    assert storage.verify().mismatches == []
    services.health._db.dispose()


@pytest.mark.commits
def test_kill9_during_tier_moves_loses_nothing(settings: Settings, db_url: str,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Three real kill -9s of `cloudfilm storage tier --run` in the middle of moves."""
    import contextlib
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import settings_to_env

    services = _tiered(settings, tmp_path)
    storage = services.storage
    assert storage is not None and storage.tiers is not None
    objects = {}
    for _ in range(4):
        objects.update(_study(services, tmp_path, 5))
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_STORAGE__COLD_URL", str(tmp_path / "cold"))
    monkeypatch.setenv("CLOUDFILM_STORAGE__TIER_UNREAD_DAYS", "30")
    assert storage.tiers.plan() == 20
    rng = random.Random()
    for cycle in range(3):
        log = open(tmp_path / f"tier{cycle}.log", "ab")  # noqa: SIM115 - the child's
        runner = subprocess.Popen([sys.executable, "-m", "cloudfilm", "storage", "tier",
                                   "--run"], stdout=log, stderr=subprocess.STDOUT,
                                  env=os.environ.copy(), start_new_session=True)
        before = storage.tiers.counts().get("cold", (0, 0))[0]
        deadline = time.monotonic() + 60
        while storage.tiers.counts().get("cold", (0, 0))[0] <= before \
                and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        # On a quiet machine the runner may finish every move before the kill: then the
        # cycle is a plain run (its process group is already gone), which is fine.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        log.close()
    # the relay hands the interrupted (queued) jobs over again; here: run what is left
    storage.run_pending()
    states = storage.job_counts()
    assert states == {"done": 20}, states
    rows = _rows(services)
    blobs = _store(services)
    for uid, original in objects.items():
        assert rows[uid].storage_tier == "cold"
        assert _served(services, uid) == original
    assert not any(True for _ in _hot(blobs).iter_blobs())  # no hot copy left behind
    assert {b.key for b in blobs.cold.iter_blobs()} == {r.blob_key for r in rows.values()}
    services.health._db.dispose()
