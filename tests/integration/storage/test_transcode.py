"""Lossless re-encoding in the background: bit-exact or left alone, and served faithfully.

Runs on both databases with the folder blob store (S3 in test_transcode_s3 below).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless
from sqlalchemy import select
from tests.conftest import shared_file
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Instance, InstanceVersion, StorageJob
from cloudfilm.infrastructure.dicom.lossless import pixels_equal
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.storage.service import StorageService

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")

# pydicom's bundled images: (file, expected outcome).
BUNDLED = [
    ("CT_small.dcm", "done"),
    ("MR_small.dcm", "done"),
    ("emri_small.dcm", "done"),         # multi-frame MR
    ("SC_rgb.dcm", "done"),             # RGB
    ("JPEG2000.dcm", "no-job"),  # already compressed: ingest makes no job
    ("rtdose.dcm", "left:bits-allocated"),  # 32-bit dose grid
]
SHARED = [
    ("us/US1_UNCR.dcm", None),
    ("us/OBXXXX1A_palette.dcm", None),
    ("multiframe/emri_small_enhancedMR_10f.dcm", None),
    ("compressed/by_ts_uid/1.2.840.10008.1.2.2.dcm", "left:big-endian"),
    ("compressed/CT_JPEG-LS_nearlossless.dcm", "no-job"),
    ("studies/tcia_lctsc_ct_rtstruct/CT01.dcm", "done"),
    ("studies/tcia_lctsc_ct_rtstruct/RT.dcm", "left:no-pixel-data"),
]


@pytest.fixture
def compressing(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"storage": StorageSettings(compress=True,
                                                                  delete_grace_seconds=0)})


@pytest.fixture
def csvc(compressing: Settings) -> Any:
    built = build_services(compressing)
    yield built
    built.health._db.dispose()


def _ingest(services: Services, tmp_path: Path, source: Path) -> tuple[str, bytes]:
    """Store a copy (with a PatientID added where the sample has none); return the UID and
    the bytes stored."""
    target = tmp_path / f"in-{source.name}"
    ds = dcmread(source)
    if not str(ds.get("PatientID", "")).strip():
        ds.PatientID = "SAMPLE"
        ds.save_as(target, enforce_file_format=True)
    else:
        shutil.copyfile(source, target)
    data = target.read_bytes()
    return services.ingest.ingest_file(target, sender=SENDER).sop_instance_uid, data


def _row(services: Services, uid: str) -> Any:
    with services.health._db.read() as session:
        return session.execute(select(Instance.__table__)
                               .where(Instance.sop_instance_uid == uid)).one()


def _served(services: Services, uid: str, wanted: str | None) -> bytes:
    obj = next(o for o in _locate_all(services) if o.sop_instance_uid == uid)
    return b"".join(services.retrieve.object_chunks(obj, wanted))


def _locate_all(services: Services) -> list[Any]:
    from cloudfilm.infrastructure.db.models import Study

    with services.health._db.read() as session:
        studies = session.scalars(select(Study.study_instance_uid)).all()
    return [o for s in studies for o in services.retrieve.locate(s, actor=LOCAL_OPERATOR)]


def _job_state(services: Services, uid: str) -> tuple[str, str]:
    with services.health._db.read() as session:
        job = session.scalars(select(StorageJob).where(StorageJob.sop_instance_uid == uid)
                              ).one_or_none()
        return ("left", "no-job") if job is None else (job.state, job.last_error)


def _check(services: Services, storage: StorageService, uid: str, original: bytes,
           expected: str | None) -> None:
    state, detail = _job_state(services, uid)
    outcome = "done" if state == "done" else detail
    if expected is not None:
        assert outcome == expected, (uid, state, detail)
    assert state in ("done", "left"), (state, detail)
    row = _row(services, uid)
    blobs = services.retrieve._blobs
    if state == "done":
        assert row.transfer_syntax_uid == JPEGLSLossless
        assert row.original_transfer_syntax_uid == dcmread(io.BytesIO(original)) \
            .file_meta.TransferSyntaxUID
        assert row.size_bytes < len(original)
        stored = b"".join(blobs.iter_chunks(row.blob_key))
        assert hashlib.sha256(stored).hexdigest() == row.sha256
        # the original is gone from the blob store, remembered in the version history
        assert not blobs.exists(_key(original))
        with services.health._db.read() as session:
            version = session.execute(select(InstanceVersion.__table__).where(
                InstanceVersion.sop_instance_uid == uid)).one()
        assert version.reason == "transcoded"
        assert version.sha256 == hashlib.sha256(original).hexdigest()
        assert version.transfer_syntax_uid == row.original_transfer_syntax_uid
        assert pixels_equal(stored, original)
        # decoded for a client that wants Explicit VR Little Endian: identical pixels
        decoded = _served(services, uid, str(ExplicitVRLittleEndian))
        assert dcmread(io.BytesIO(decoded)).file_meta.TransferSyntaxUID == \
            ExplicitVRLittleEndian
        assert pixels_equal(decoded, original)
    else:
        assert row.original_transfer_syntax_uid == ""
        assert row.sha256 == hashlib.sha256(original).hexdigest()
        assert b"".join(blobs.iter_chunks(row.blob_key)) == original


def _key(data: bytes) -> str:
    from cloudfilm.infrastructure.storage.base import blob_key

    return blob_key(hashlib.sha256(data).hexdigest())


def test_bundled_images_round_trip_bit_exactly_or_are_left_alone(
        csvc: Services, tmp_path: Path) -> None:
    storage = csvc.storage
    assert storage is not None
    uids = {}
    for name, expected in BUNDLED:
        uid, data = _ingest(csvc, tmp_path, Path(get_testdata_file(name)))  # type: ignore[arg-type]
        uids[uid] = (data, expected)
    assert storage.run_pending() == {"done": 4, "left": 1}
    for uid, (original, expected) in uids.items():
        _check(csvc, storage, uid, original, expected)
    # idempotent: a second run has nothing to do; a resend of an original is a duplicate
    assert storage.run_pending() == {}
    for uid, (original, _) in uids.items():
        resend = tmp_path / f"again-{uid}.dcm"
        resend.write_bytes(original)
        assert csvc.ingest.ingest_file(resend, sender=SENDER).outcome == "duplicate"


def test_shared_set_round_trips_or_is_left_alone(csvc: Services, tmp_path: Path) -> None:
    storage = csvc.storage
    assert storage is not None
    uids = {}
    for relative, expected in SHARED:
        uid, data = _ingest(csvc, tmp_path, shared_file(relative))
        uids[uid] = (data, expected)
    storage.run_pending()
    for uid, (original, expected) in uids.items():
        _check(csvc, storage, uid, original, expected)


def test_synthetic_ct_compresses_and_the_client_gets_original_bytes_back(
        csvc: Services, client_of: Any, tmp_path: Path) -> None:
    storage = csvc.storage
    assert storage is not None
    ds = make_ct()
    original = to_bytes(ds)
    path = tmp_path / "ct.dcm"
    path.write_bytes(original)
    uid = csvc.ingest.ingest_file(path, sender=SENDER).sop_instance_uid
    assert storage.run_pending() == {"done": 1}
    _check(csvc, storage, uid, original, "done")
    http = client_of(csvc)
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{uid}")
    plain = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert plain.status_code == 200
    part = _only_part(plain)
    assert dcmread(io.BytesIO(part)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert pixels_equal(part, original)
    explicit = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                f"transfer-syntax={ExplicitVRLittleEndian}"})
    assert pixels_equal(_only_part(explicit), original)
    stored = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                              "transfer-syntax=*"})
    stored_part = _only_part(stored)
    assert dcmread(io.BytesIO(stored_part)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert len(stored_part) < len(original)
    assert pixels_equal(stored_part, original)
    # frames: the JPEG-LS bitstream when asked for it, the original bytes otherwise
    jls = http.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jls"'})
    assert jls.status_code == 200
    assert _only_part(jls)[:2] == b"\xff\xd8"  # a JPEG-LS codestream (SOI)
    raw = http.get(f"{url}/frames/1",
                   headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert _only_part(raw) == ds.PixelData


def _only_part(response: Any) -> bytes:
    from email import message_from_bytes, policy

    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    msg = message_from_bytes(head + response.content, policy=policy.HTTP)
    parts = [p.get_payload(decode=True) for p in msg.iter_parts()]
    assert len(parts) == 1
    return bytes(parts[0])


@pytest.fixture
def client_of() -> Any:
    from fastapi.testclient import TestClient

    from cloudfilm.interfaces.api.http import create_app

    opened: list[Any] = []

    def make(services: Services) -> Any:
        c = TestClient(create_app(services))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def test_disabled_policy_enqueues_nothing(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(make_ct()))
    services.ingest.ingest_file(path, sender=SENDER)
    assert services.storage is not None
    assert services.storage.job_counts() == {}


def test_failing_job_goes_to_the_dead_list_and_retry_brings_it_back(
        csvc: Services, tmp_path: Path) -> None:
    storage = csvc.storage
    assert storage is not None
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(make_ct()))
    uid = csvc.ingest.ingest_file(path, sender=SENDER).sop_instance_uid
    row = _row(csvc, uid)
    local = csvc.retrieve._blobs.local_path(row.blob_key)
    assert local is not None
    good = local.read_bytes()
    local.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # damaged: never re-encoded
    for _ in range(3):
        storage.run_pending()
        with csvc.health._db.write() as session:  # what the relay does after stale_seconds
            session.execute(StorageJob.__table__.update().where(StorageJob.state == "queued")
                            .values(state="pending"))
    assert _job_state(csvc, uid)[0] == "dead"
    assert "SHA-256" in _job_state(csvc, uid)[1]
    assert [j.state for j in storage.jobs(state="dead")] == ["dead"]
    local.write_bytes(good)
    assert storage.retry() == 1
    assert storage.run_pending() == {"done": 1}


def test_forecast_reports_bytes_per_modality_and_month_and_projects(
        csvc: Services, tmp_path: Path) -> None:
    storage = csvc.storage
    assert storage is not None
    sizes = 0
    for i in range(3):
        data = to_bytes(make_ct(instance_number=i + 1, size=64))
        sizes += len(data)
        (tmp_path / f"f{i}.dcm").write_bytes(data)
        csvc.ingest.ingest_file(tmp_path / f"f{i}.dcm", sender=SENDER)
    before = storage.forecast(raw_per_year=16e15)
    assert before.ratio == 1.0
    storage.run_pending()
    after = storage.forecast(raw_per_year=16e15)
    (row,) = after.rows
    assert row.modality == "CT" and row.objects == 3 and len(row.month) == 7
    assert row.received_bytes == sizes and row.stored_bytes < sizes
    assert after.ratio == pytest.approx(sizes / row.stored_bytes)
    raw30, stored30 = after.projection[30]
    assert raw30 == pytest.approx(30 * 16e15)
    assert stored30 == pytest.approx(raw30 / after.ratio)


def test_the_original_blob_outlives_the_switch_by_the_grace_period(
        settings: Settings, tmp_path: Path) -> None:
    import time

    services = build_services(settings.model_copy(update={"storage": StorageSettings(
        compress=True, delete_grace_seconds=1)}))
    storage = services.storage
    assert storage is not None
    original = to_bytes(make_ct(size=64))
    (tmp_path / "g.dcm").write_bytes(original)
    uid = services.ingest.ingest_file(tmp_path / "g.dcm", sender=SENDER).sop_instance_uid
    located = _locate_all(services)  # a reader that located it before the switch
    assert storage.run_pending() == {"cleanup": 1}
    assert _row(services, uid).transfer_syntax_uid == JPEGLSLossless
    assert b"".join(services.retrieve.object_chunks(located[0], "*")) == original
    assert storage.run_pending() == {}  # not due yet
    time.sleep(1.1)
    assert storage.run_pending() == {"done": 1}
    assert not services.retrieve._blobs.exists(_key(original))
    services.health._db.dispose()


def test_a_failed_blob_write_leaves_its_object_as_it_was_and_the_batch_goes_on(
        csvc: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new blobs of a batch are written by threads; one write failing keeps that
    object's original indexed and served (its job is retried), the others switch."""
    storage = csvc.storage
    assert storage is not None
    originals = {}
    for i in range(3):
        path = tmp_path / f"b{i}.dcm"
        data = to_bytes(make_ct(instance_number=i + 1, size=64))
        path.write_bytes(data)
        originals[csvc.ingest.ingest_file(path, sender=SENDER).sop_instance_uid] = data
    failing = sorted(originals)[1]
    real_put = storage._put
    failing_key: list[str] = []

    def put(key: str, data: bytes) -> None:
        if not failing_key and dcmread(io.BytesIO(data)).SOPInstanceUID == failing:
            failing_key.append(key)
            raise OSError("disk full")
        real_put(key, data)

    monkeypatch.setattr(storage, "_put", put)
    assert storage.run_pending() == {"done": 2, "failed": 1}
    assert failing_key and not csvc.retrieve._blobs.exists(failing_key[0])
    for uid, original in originals.items():
        row = _row(csvc, uid)
        assert (row.transfer_syntax_uid == JPEGLSLossless) == (uid != failing)
        assert pixels_equal(_served(csvc, uid, str(ExplicitVRLittleEndian)), original)
    assert _job_state(csvc, failing)[0] == "queued"  # handed over again by the relay
    assert _served(csvc, failing, None) == originals[failing]
