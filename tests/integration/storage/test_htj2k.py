"""HTJ2K lossless as the configured target: bit-exact through the job system, decoded for a
client that names no syntax; colour goes to JPEG-LS instead (a browser decoder shows colour
HTJ2K wrongly); the policy per hospital wins over the modality's."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEGLSLossless
from sqlalchemy import select
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.db.models import Instance, StorageJob, Study
from cloudfilm.infrastructure.dicom.lossless import pixels_equal
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")


def _build(settings: Settings, **storage: Any) -> Services:
    return build_services(settings.model_copy(update={"storage": StorageSettings(
        compress=True, delete_grace_seconds=0, **storage)}))


def _ingest(services: Services, tmp_path: Path, data: bytes, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return services.ingest.ingest_file(path, sender=SENDER).sop_instance_uid


def _served(services: Services, uid: str, wanted: str | None) -> bytes:
    with services.health._db.read() as session:
        study = session.scalars(select(Study.study_instance_uid).join(
            Instance, Instance.study_fk == Study.id).where(Instance.sop_instance_uid == uid)
        ).one()
    obj = next(o for o in services.retrieve.locate(study, actor=LOCAL_OPERATOR)
               if o.sop_instance_uid == uid)
    return b"".join(services.retrieve.object_chunks(obj, wanted))


def _syntax(services: Services, uid: str) -> str:
    with services.health._db.read() as session:
        return str(session.scalars(select(Instance.transfer_syntax_uid)
                                   .where(Instance.sop_instance_uid == uid)).one())


def test_htj2k_round_trips_bit_exactly_and_colour_goes_jpeg_ls(
        settings: Settings, tmp_path: Path) -> None:
    services = _build(settings, compress_default=str(HTJ2KLossless))
    storage = services.storage
    assert storage is not None
    ct = to_bytes(make_ct(size=128))
    signed = Path(get_testdata_file("CT_small.dcm"))  # signed 16-bit
    ds = dcmread(signed)
    ds.PatientID = ds.PatientID or "SAMPLE"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rgb_path = tmp_path / "rgb.dcm"
    shutil.copyfile(get_testdata_file("SC_rgb.dcm"), rgb_path)
    rgb_ds = dcmread(rgb_path)
    rgb_ds.PatientID = "SAMPLE"
    rgb_buf = io.BytesIO()
    rgb_ds.save_as(rgb_buf, enforce_file_format=True)
    originals = {_ingest(services, tmp_path, ct, "ct.dcm"): ct,
                 _ingest(services, tmp_path, buf.getvalue(), "signed.dcm"): buf.getvalue()}
    rgb_uid = _ingest(services, tmp_path, rgb_buf.getvalue(), "rgb2.dcm")
    assert storage.run_pending() == {"done": 3}
    for uid, original in originals.items():
        assert _syntax(services, uid) == HTJ2KLossless
        stored = _served(services, uid, "*")
        assert dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == HTJ2KLossless
        assert len(stored) < len(original)
        back = _served(services, uid, None)  # a client naming no syntax: decoded
        assert dcmread(io.BytesIO(back)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert pixels_equal(back, original) and pixels_equal(stored, original)
    assert _syntax(services, rgb_uid) == JPEGLSLossless
    assert pixels_equal(_served(services, rgb_uid, None), rgb_buf.getvalue())
    services.health._db.dispose()


def test_the_hospital_policy_wins_over_the_modality(settings: Settings,
                                                     tmp_path: Path) -> None:
    services = _build(settings, compress_modalities={"CT": str(HTJ2KLossless)},
                      compress_hospitals={"H1": "none"})
    storage = services.storage
    assert storage is not None
    uid = _ingest(services, tmp_path, to_bytes(make_ct(size=64)), "ct.dcm")
    assert storage.run_pending() == {"left": 1}
    with services.health._db.read() as session:
        detail = session.scalars(select(StorageJob.last_error)
                                 .where(StorageJob.sop_instance_uid == uid)).one()
    assert detail == "left:policy"
    assert _syntax(services, uid) == ExplicitVRLittleEndian
    services.health._db.dispose()


def test_jobs_cli_shows_the_dead_letter_list_and_retries(
        settings: Settings, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from tests.conftest import settings_to_env

    from cloudfilm.cli.main import cli

    services = _build(settings)
    storage = services.storage
    assert storage is not None
    uid = _ingest(services, tmp_path, to_bytes(make_ct(size=64)), "ct.dcm")
    with services.health._db.read() as session:
        key = session.scalars(select(Instance.blob_key)
                              .where(Instance.sop_instance_uid == uid)).one()
    local = services.retrieve._blobs.local_path(key)
    assert local is not None
    good = local.read_bytes()
    local.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # damaged: never re-encoded
    for _ in range(3):
        storage.run_pending()
    settings_to_env(monkeypatch, settings, db_url)
    monkeypatch.setenv("CLOUDFILM_STORAGE__COMPRESS", "true")
    monkeypatch.setenv("CLOUDFILM_STORAGE__DELETE_GRACE_SECONDS", "0")
    runner = CliRunner()
    listed = runner.invoke(cli, ["jobs", "list", "--state", "dead"])
    assert listed.exit_code == 0 and "dead=1" in listed.output and uid in listed.output
    local.write_bytes(good)
    retried = runner.invoke(cli, ["jobs", "retry"])
    assert retried.exit_code == 0 and "1 job(s) queued again" in retried.output
    ran = runner.invoke(cli, ["jobs", "run"])
    assert ran.exit_code == 0 and "done=1" in ran.output, ran.output
    assert _syntax(services, uid) == JPEGLSLossless
    services.health._db.dispose()
