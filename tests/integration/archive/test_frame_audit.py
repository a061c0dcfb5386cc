"""A viewer's frames (issue 14): decided one by one, recorded once a window a series.

The first frame of a series is recorded (committed, naming the resident) before it is
returned; the further frames of the window are counted and written as one record when the
window ends; a grant withdrawn in the middle refuses the very next frame, recorded at once.
On both databases."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text
from tests.factories import make_ct, to_bytes

from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.access.consent import GrantRequest, InPersonEvidence
from cloudfilm.services.archive.frame_audit import FrameAuditWindows
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotAuthorizedError
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput


def _frames_rows(db_url: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT action, outcome, resource_type, resource_uid, resident_id, detail "
                "FROM audit_event WHERE action = 'frames' ORDER BY seq")))
    finally:
        engine.dispose()


def _world(services: Services, tmp_path: Path) -> tuple[Actor, int, str, str, list[str]]:
    nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                               rng=random.Random(3))
    for code in ("HA", "HC"):
        services.hospitals.register(HospitalInput(code=code, name=code, level="tertiary",
                                                  grade="A", national_id_source="patient_id"))
    study, series = generate_uid(), generate_uid()
    items, sops = [], []
    for i in range(4):
        ds = make_ct(patient_id=nid, study_uid=study, series_uid=series, instance_number=i + 1)
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(to_bytes(ds))
        items.append(IngestItem(path))
        sops.append(str(ds.SOPInstanceUID))
    assert not [r for r in services.ingest.ingest_files(items, sender=Sender("HA", "HA", "t"))
                if isinstance(r, Exception)]
    services.accounts.create_account(NewAccount(
        kind="doctor", username="dr.c", password="correct horse battery", display_name="C",
        hospital_code="HC"), by=LOCAL_OPERATOR)
    token = services.accounts.sign_in_password("dr.c", "correct horse battery",
                                               requester="t").token
    doctor = services.accounts.actor_for_token(token)
    assert doctor is not None
    grant = services.consent.in_person(doctor, GrantRequest(purpose="会诊", national_id=nid),
                                       InPersonEvidence(id_card_number=nid, witness_name="W"))
    return doctor, grant.id, study, series, sops


def test_frames_are_counted_in_a_window_and_refused_at_once_after_revocation(
        services: Services, db_url: str, tmp_path: Path) -> None:
    doctor, grant_id, study, series, sops = _world(services, tmp_path)
    retrieve = services.retrieve
    for sop in sops + sops[:2]:
        assert retrieve.frames(study, series, sop, [1], "*", actor=doctor)[0].data
    [opening] = _frames_rows(db_url)
    assert (opening.outcome, opening.resource_type, opening.resource_uid) == (
        "allowed", "instance", sops[0])
    assert opening.resident_id is not None
    retrieve.flush_frame_audit()
    rows = _frames_rows(db_url)
    assert len(rows) == 2
    counted = rows[1]
    assert (counted.resource_type, counted.resource_uid, counted.resident_id) == (
        "series", series, opening.resident_id)
    detail = counted.detail if isinstance(counted.detail, dict) else orjson.loads(counted.detail)
    assert detail["objects"] == 5 and detail["study"] == study

    # A new window opens with a record; then the grant is withdrawn: the next frame is
    # refused and the refusal recorded at once (no window covers a refusal).
    retrieve.frames(study, series, sops[0], [1], "*", actor=doctor)
    services.consent.revoke(doctor, grant_id)
    with pytest.raises(NotAuthorizedError):
        retrieve.frames(study, series, sops[1], [1], "*", actor=doctor)
    rows = _frames_rows(db_url)
    assert [r.outcome for r in rows[2:]] == ["allowed", "denied"]


def test_windows_end_and_report_their_counts() -> None:
    now = [0.0]
    windows = FrameAuditWindows(seconds=60, clock=lambda: now[0])
    actor = LOCAL_OPERATOR
    key = (actor, "1.2", "1.2.3")
    assert not windows.active(key)
    assert windows.opened(key, resident_id=7, reason="own-hospital") == []
    windows.count(key, 3)
    assert windows.active(key) and windows.expired() == []
    now[0] = 61.0
    assert not windows.active(key)
    [entry] = windows.expired()
    assert (entry.resource_uid, entry.resident_id, entry.detail["objects"]) == ("1.2.3", 7, 3)
    assert windows.expired(everything=True) == []


def test_each_http_process_writes_its_frame_counts_when_it_stops(
        services: Services, db_url: str, tmp_path: Path) -> None:
    """`serve --workers N`: every worker holds its own windows; the app's lifespan (run in
    each process) writes them at shutdown, not only the supervising parent."""
    from fastapi.testclient import TestClient

    from cloudfilm.interfaces.api.http import create_app

    doctor, _, study, series, sops = _world(services, tmp_path)
    with TestClient(create_app(services)):
        for sop in sops:
            services.retrieve.frames(study, series, sop, [1], "*", actor=doctor)
        assert len(_frames_rows(db_url)) == 1  # the opening record only, so far
    rows = _frames_rows(db_url)
    assert len(rows) == 2 and rows[1].resource_type == "series"
