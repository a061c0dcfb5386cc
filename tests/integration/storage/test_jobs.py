"""Background jobs in real processes: the huey worker, and kill -9 in the middle of
re-encoding (nothing lost, no orphan blob, every object served with its original pixels)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from tests.conftest import settings_to_env
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.config import JobSettings, Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Instance, InstanceVersion
from cloudfilm.infrastructure.dicom.lossless import pixels_equal
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services

pytestmark = pytest.mark.commits

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")


@pytest.fixture
def jobs_env(settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_STORAGE__COMPRESS", "true")
    monkeypatch.setenv("CLOUDFILM_JOBS__RELAY_SECONDS", "0.2")
    monkeypatch.setenv("CLOUDFILM_JOBS__RETRY_DELAY_SECONDS", "0")
    monkeypatch.setenv("CLOUDFILM_STORAGE__DELETE_GRACE_SECONDS", "0")
    return settings.model_copy(update={"storage": StorageSettings(compress=True,
                                                                  delete_grace_seconds=0),
                                       "jobs": JobSettings(relay_seconds=0.2)})


def _ingest_many(services: Services, tmp_path: Path, n: int, size: int) -> dict[str, bytes]:
    study, series = make_ct().StudyInstanceUID, make_ct().SeriesInstanceUID
    originals = {}
    for i in range(n):
        ds = make_ct(study_uid=study, series_uid=series, instance_number=i + 1, size=size)
        data = to_bytes(ds)
        path = tmp_path / f"ct{i}.dcm"
        path.write_bytes(data)
        services.ingest.ingest_file(path, sender=SENDER)
        originals[ds.SOPInstanceUID] = data
    return originals


def _cloudfilm(args: list[str], tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    # Output to files, never pipes: a child blocked on a full pipe would hang the test.
    out = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen([sys.executable, "-m", "cloudfilm", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=os.environ.copy(),
                            start_new_session=True)


def _assert_all_served_faithfully(services: Services, originals: dict[str, bytes]) -> None:
    blobs = services.retrieve._blobs
    with services.health._db.read() as session:
        rows = session.execute(select(Instance.__table__)).all()
        versions = session.execute(select(InstanceVersion.__table__)).all()
    assert {r.sop_instance_uid for r in rows} == set(originals)
    assert all(r.original_transfer_syntax_uid == ExplicitVRLittleEndian for r in rows)
    assert len(versions) == len(rows)  # one history row per object, none twice
    for obj in services.retrieve.locate(_study_uid(services),
                                        actor=LOCAL_OPERATOR):
        decoded = b"".join(services.retrieve.object_chunks(obj, None))
        assert pixels_equal(decoded, originals[obj.sop_instance_uid])
    # no orphan: the blob store holds exactly the blobs the index references
    assert {b.key for b in blobs.iter_blobs()} == {r.blob_key for r in rows}


def _study_uid(services: Services) -> str:
    from cloudfilm.infrastructure.db.models import Study

    with services.health._db.read() as session:
        return str(session.scalars(select(Study.study_instance_uid)).one())


def test_the_worker_process_reencodes_what_ingest_enqueued(
        jobs_env: Settings, db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        # The queue is huey's own SQLite file either way; the index side of jobs runs on
        # PostgreSQL in the kill -9 test below. Saves ~20 s of process start-up.
        pytest.skip("worker processes are tested on the SQLite index")
    services = build_services(jobs_env)
    storage = services.storage
    assert storage is not None
    originals = _ingest_many(services, tmp_path, 4, 64)
    assert storage.job_counts() == {"pending": 4}  # ingest only enqueued
    worker = _cloudfilm(["jobs", "worker", "--workers", "2"], tmp_path, "worker")
    try:
        deadline = time.monotonic() + 90
        while storage.job_counts() != {"done": 4} and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    assert storage.job_counts() == {"done": 4}, (tmp_path / "worker.log").read_text()
    _assert_all_served_faithfully(services, originals)
    services.health._db.dispose()


def test_kill9_during_reencoding_loses_nothing(jobs_env: Settings, tmp_path: Path) -> None:
    services = build_services(jobs_env)
    storage = services.storage
    assert storage is not None
    originals = _ingest_many(services, tmp_path, 12, 512)
    rng = random.Random()
    progress = []
    done = 0
    for cycle in range(3):
        runner = _cloudfilm(["jobs", "run"], tmp_path, f"run{cycle}")
        # Kill once this run has re-encoded something, at a random moment after that: in
        # the middle of another object's steps (encode, blob write, index, delete).
        deadline = time.monotonic() + 60
        while storage.job_counts().get("done", 0) <= done and time.monotonic() < deadline \
                and runner.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        with contextlib.suppress(ProcessLookupError):  # it may have finished everything
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        done = storage.job_counts().get("done", 0)
        progress.append(done)
    # Whatever the kills interrupted, one more run finishes the rest.
    assert storage.run_pending().get("dead", 0) == 0
    counts: dict[str, Any] = storage.job_counts()
    print(f"\nkill -9 during re-encoding: done after each kill {progress}; final {counts}")
    assert counts == {"done": 12}
    _assert_all_served_faithfully(services, originals)
    services.health._db.dispose()
