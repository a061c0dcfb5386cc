"""The ingest pipeline on both databases: validation, idempotency, replacement, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.db.models import Instance, InstanceVersion, Series, Study
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import (
    InstanceConflictError,
    InvalidInstanceError,
    ResourceUnavailableError,
    UnsupportedSOPClassError,
)

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")


def _write(tmp_path: Path, data: bytes, name: str = "obj.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _count(services: Services, model: type) -> int:
    with services.ingest._db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_store_then_resend_is_a_duplicate(services: Services, tmp_path: Path) -> None:
    path = _write(tmp_path, to_bytes(make_ct()))
    first = services.ingest.ingest_file(path, sender=SENDER)
    again = services.ingest.ingest_file(path, sender=SENDER)
    assert (first.outcome, again.outcome) == ("stored", "duplicate")
    assert _count(services, Instance) == 1
    with services.ingest._db.read() as session:
        study = session.scalars(select(Study)).one()
        assert (study.num_instances, study.num_series) == (1, 1)
        assert study.size_bytes == path.stat().st_size


def test_counters_follow_series_and_instances(services: Services, tmp_path: Path) -> None:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    for i in range(5):
        ds = make_ct(study_uid=study, series_uid=series[i % 2], instance_number=i + 1)
        services.ingest.ingest_file(_write(tmp_path, to_bytes(ds), f"{i}.dcm"), sender=SENDER)
    with services.ingest._db.read() as session:
        row = session.scalars(select(Study)).one()
        assert (row.num_series, row.num_instances) == (2, 5)
        counts = sorted(session.scalars(select(Series.num_instances)))
        assert counts == [2, 3]


def test_changed_object_replaces_and_keeps_the_old_version(
    services: Services, tmp_path: Path
) -> None:
    ds = make_ct()
    services.ingest.ingest_file(_write(tmp_path, to_bytes(ds), "a.dcm"), sender=SENDER)
    ds.PatientName = "Wang^XiaoDong=王^小东"
    result = services.ingest.ingest_file(_write(tmp_path, to_bytes(ds), "b.dcm"), sender=SENDER)
    assert result.outcome == "replaced"
    assert _count(services, Instance) == 1
    with services.ingest._db.read() as session:
        old_sha, old_key = session.execute(
            select(InstanceVersion.sha256, InstanceVersion.blob_key)).one()
        current_sha = session.scalars(select(Instance.sha256)).one()
    assert old_sha != current_sha
    assert services.retrieve._blobs.exists(old_key)


def test_same_uid_from_another_hospital_is_held_not_replaced(services: Services,
                                                             tmp_path: Path) -> None:
    ds = make_ct()
    services.ingest.ingest_file(_write(tmp_path, to_bytes(ds), "a.dcm"), sender=SENDER)
    ds.SeriesDescription = "changed"
    other = Sender(hospital_code="H2", hospital_name="Hospital Two", door="test")
    held = services.ingest.ingest_file(_write(tmp_path, to_bytes(ds), "b.dcm"), sender=other)
    # stored for the reconciliation queue (issue 12), the first hospital's object untouched
    assert held.outcome == "held" and "another hospital" in held.warnings[0]
    assert _count(services, InstanceVersion) == 0
    assert _count(services, Instance) == 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"SOPInstanceUID": ""}, "missing-uid"),
        ({"StudyInstanceUID": "1.2.03.4"}, "invalid-uid"),
        ({"SeriesInstanceUID": "abc"}, "invalid-uid"),
        ({"PatientID": "X" * 70}, "invalid-patient-id"),
    ],
)
def test_invalid_headers_are_refused_and_nothing_remains(
    services: Services, tmp_path: Path, change: dict[str, str], code: str
) -> None:
    ds = make_ct()
    for key, value in change.items():
        setattr(ds, key, value)
    with pytest.raises(InvalidInstanceError) as info:
        services.ingest.ingest_file(_write(tmp_path, to_bytes(ds)), sender=SENDER)
    assert info.value.code == code
    assert _count(services, Instance) == 0
    assert list(services.retrieve._blobs.iter_blobs()) == []


def test_non_dicom_and_truncated_files_are_refused(services: Services, tmp_path: Path) -> None:
    with pytest.raises(InvalidInstanceError, match="not a DICOM file"):
        services.ingest.ingest_file(_write(tmp_path, b"%PDF-1.4 hello" * 50), sender=SENDER)
    data = to_bytes(make_ct(size=64))
    with pytest.raises(InvalidInstanceError, match="truncated"):
        services.ingest.ingest_file(_write(tmp_path, data[:-500]), sender=SENDER)
    assert _count(services, Instance) == 0


def test_non_storage_sop_class_is_refused(services: Services, tmp_path: Path) -> None:
    ds = make_ct(SOPClassUID="1.2.840.10008.1.1")  # Verification SOP Class
    with pytest.raises(UnsupportedSOPClassError):
        services.ingest.ingest_file(_write(tmp_path, to_bytes(ds)), sender=SENDER)


def test_index_failure_removes_the_new_blob(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfilm.infrastructure.db import archive_repository
    from cloudfilm.infrastructure.db.session import DatabaseUnavailableError

    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseUnavailableError("disk I/O error")

    monkeypatch.setattr(archive_repository, "add_instances", broken)
    with pytest.raises(ResourceUnavailableError):
        services.ingest.ingest_file(_write(tmp_path, to_bytes(make_ct())), sender=SENDER)
    assert list(services.retrieve._blobs.iter_blobs()) == []
    assert _count(services, Instance) == 0
    assert _count(services, Study) == 0  # the whole transaction rolled back


def test_study_of_another_patient_is_a_conflict(services: Services, tmp_path: Path) -> None:
    study = generate_uid()
    services.ingest.ingest_file(
        _write(tmp_path, to_bytes(make_ct(study_uid=study, patient_id="A")), "a.dcm"),
        sender=SENDER)
    with pytest.raises(InstanceConflictError):
        services.ingest.ingest_file(
            _write(tmp_path, to_bytes(make_ct(study_uid=study, patient_id="B")), "b.dcm"),
            sender=SENDER)


def test_sweeper_removes_only_unreferenced_old_blobs(services: Services, tmp_path: Path) -> None:
    services.ingest.ingest_file(_write(tmp_path, to_bytes(make_ct())), sender=SENDER)
    orphan = tmp_path / "orphan.dcm"
    orphan.write_bytes(b"x" * 100)
    blobs = services.retrieve._blobs
    blobs.put_file("ab/cd/" + "ab" * 32 + ".dcm", orphan)
    young = services.maintenance.sweep_orphans(min_age_seconds=3600)
    assert young.removed == 0
    report = services.maintenance.sweep_orphans(min_age_seconds=0)
    assert report.removed == 1 and report.scanned == 2
    assert len(list(blobs.iter_blobs())) == 1


def test_late_resend_of_a_superseded_version_changes_nothing(
    services: Services, tmp_path: Path
) -> None:
    ds = make_ct()
    first = to_bytes(ds)
    ds.StudyDescription = "corrected"
    second = to_bytes(ds)
    services.ingest.ingest_file(_write(tmp_path, first, "1.dcm"), sender=SENDER)
    services.ingest.ingest_file(_write(tmp_path, second, "2.dcm"), sender=SENDER)
    late = services.ingest.ingest_file(_write(tmp_path, first, "3.dcm"), sender=SENDER)
    assert late.outcome == "duplicate"
    assert _count(services, InstanceVersion) == 1


def test_a_failed_blob_write_fails_only_its_object(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfilm.infrastructure.storage.base import BlobStoreError
    from cloudfilm.services.archive.ingest import IngestItem

    blobs = services.retrieve._blobs
    original = blobs.put_file
    objects = [make_ct(instance_number=i) for i in range(3)]
    doomed = objects[1].SOPInstanceUID

    def flaky(key: str, path: Path, *, move: bool = False) -> None:
        from pydicom import dcmread

        if dcmread(path, stop_before_pixels=True).SOPInstanceUID == doomed:
            raise BlobStoreError("disk full (ENOSPC)")
        original(key, path, move=move)

    monkeypatch.setattr(blobs, "put_file", flaky)
    items = [IngestItem(_write(tmp_path, to_bytes(ds), f"{i}.dcm")) for i, ds in
             enumerate(objects)]
    results = services.ingest.ingest_files(items, sender=SENDER)
    assert isinstance(results[1], ResourceUnavailableError)
    assert "disk full" in results[1].message
    assert [r.outcome for r in (results[0], results[2])] == ["stored", "stored"]
    assert _count(services, Instance) == 2
    with services.ingest._db.read() as session:
        assert doomed not in set(session.scalars(select(Instance.sop_instance_uid)))
