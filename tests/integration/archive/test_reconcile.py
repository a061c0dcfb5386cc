"""Objects a hospital could not archive before (no PatientID; a study UID another hospital
holds) are stored, answered with a warning, held out of every record and settled through
the reconciliation queue. On both databases, with attacks from another hospital."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.uid import generate_uid
from rich.console import Console
from sqlalchemy import create_engine, text
from tests.conftest import settings_to_env, shared_file
from tests.factories import make_ct, multipart, to_bytes

from cloudfilm.cli.importer import run_import, sender_for
from cloudfilm.config import Settings
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.archive.reconcile import derived_uid
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR, Actor, Role

ADMIN = {"Authorization": "Bearer test-admin-token"}
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class Rig:
    def __init__(self, services: Services, client: TestClient, db_url: str) -> None:
        self.services, self.http, self.db_url = services, client, db_url
        self.ids: dict[str, int] = {}
        self.tokens: dict[str, dict[str, str]] = {}
        for code in ("HA", "HB"):
            view = services.hospitals.register(HospitalInput(
                code=code, name=f"Hospital {code}", level="tertiary", grade="A",
                national_id_source="patient_id"))
            self.ids[code] = view.id
            token = services.credentials.issue(code).token
            self.tokens[code] = {"Authorization": f"Bearer {token}"}

    def stow(self, code: str, *datasets: Any, raw: list[bytes] | None = None) -> Any:
        body, ctype = multipart(raw if raw is not None else [to_bytes(d) for d in datasets])
        return self.http.post("/dicomweb/studies", content=body,
                              headers={**self.tokens[code], "Content-Type": ctype})

    def studies(self, code: str | None) -> dict[str, dict[str, Any]]:
        headers = self.tokens[code] if code else ADMIN
        response = self.http.get("/dicomweb/studies?includefield=all", headers=headers)
        assert response.status_code == 200, response.text
        return {m["0020000D"]["Value"][0]: m for m in response.json()}

    def queue(self, code: str | None, state: str = "open") -> list[dict[str, Any]]:
        headers = self.tokens[code] if code else ADMIN
        response = self.http.get(f"/api/v1/reconciliation?state={state}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def hospital_admin(self, code: str) -> Actor:
        return Actor(kind="doctor", subject=f"account:admin-{code}", hospital_id=self.ids[code],
                     hospital_code=code, roles=frozenset({Role.DOCTOR, Role.HOSPITAL_ADMIN}))

    def count(self, sql: str) -> int:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture
def rig(services: Services, db_url: str) -> Iterator[Rig]:
    with TestClient(create_app(services)) as client:
        yield Rig(services, client, db_url)


def _held_warning(response: Any) -> str:
    assert response.status_code == 202, response.text
    [item] = response.json()["00081199"]["Value"]
    assert item["00081196"]["Value"] == [0xB000]
    assert "held for reconciliation" in response.headers["warning"]
    return str(item["0040A160"]["Value"][0])


def test_object_without_patient_id_is_held_then_filed_under_the_assigned_patient(
        rig: Rig) -> None:
    ds = make_ct(patient_id="", patient_name="Li^Na")
    sop, study = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
    assert "PatientID is empty" in _held_warning(rig.stow("HA", ds))
    # durable: the blob exists and the item references it
    [item] = rig.queue("HA")
    assert (item["reason"], item["sop_instance_uid"], item["summary"]["patient_name"]) == (
        "no-patient-id", sop, "Li^Na")
    assert rig.services.maintenance.sweep_orphans(min_age_seconds=0).removed == 0
    assert rig.count("SELECT count(*) FROM reconciliation_item") == 1
    # resending is harmless: the same answer, no second item
    _held_warning(rig.stow("HA", ds))
    assert len(rig.queue("HA")) == 1
    # in no record: not the hospital's, not the administrator's QIDO, no patient row
    assert study not in rig.studies("HA") and study not in rig.studies(None)
    assert rig.count("SELECT count(*) FROM patient WHERE patient_id = ''") == 0
    # hospital B neither sees nor settles it; absent and foreign look the same
    assert rig.queue("HB") == []
    for url in (f"/api/v1/reconciliation/{item['id']}", "/api/v1/reconciliation/99999"):
        assert rig.http.get(url, headers=rig.tokens["HB"]).status_code == 403
    denied = rig.http.post(f"/api/v1/reconciliation/{item['id']}/assign",
                           json={"patient_id": "B-1"}, headers=rig.tokens["HB"])
    assert denied.status_code == 403
    assert rig.http.get("/api/v1/reconciliation?hospital=HA",
                        headers=rig.tokens["HB"]).status_code == 403
    # HA's hospital administrator assigns the local ID
    settled = rig.services.reconcile.assign(  # type: ignore[union-attr]
        item["id"], actor=rig.hospital_admin("HA"), patient_id="HA-77")
    assert (settled.state, settled.result["sop_instance_uid"]) == ("assigned", sop)
    found = rig.studies("HA")[study]
    assert found["00100020"]["Value"] == ["HA-77"]
    assert study not in rig.studies("HB")
    # the corrected copy is served; the original bytes stay kept by the item
    series = str(ds.SeriesInstanceUID)
    body = rig.http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                        headers={**rig.tokens["HA"], "Accept": ANY_TS}).content
    assert b"HA-77" in body
    assert rig.services.maintenance.sweep_orphans(min_age_seconds=0).removed == 0
    # settled once: a second settling is refused, a resend of the original changes nothing
    with pytest.raises(InvalidInputError):
        rig.services.reconcile.assign(item["id"], patient_id="X")  # type: ignore[union-attr]
    _held_warning(rig.stow("HA", ds))
    assert rig.queue("HA") == [] and len(rig.queue("HA", "all")) == 1
    # audited: the hold, the refusals and the settling
    actions = rig.count("SELECT count(*) FROM audit_event WHERE action = 'archive.held'")
    assert actions == 1
    assert rig.count("SELECT count(*) FROM audit_event WHERE action = 'reconcile' "
                     "AND outcome = 'denied'") >= 3
    assert rig.count("SELECT count(*) FROM audit_event WHERE action = 'reconcile.settle'") == 1


def test_assign_by_national_id_files_under_the_linked_local_record(rig: Rig) -> None:
    nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                               rng=__import__("random").Random(3))
    first = make_ct(patient_id=nid, patient_name="Wang^XiaoDong")
    assert rig.stow("HA", first).status_code == 200
    resident = rig.services.residents.xref(national_id=nid).id
    orphan = make_ct(patient_id="", patient_name="Wang^XiaoDong")
    _held_warning(rig.stow("HA", orphan))
    me = Actor(kind="resident", subject="account:r", resident_ids=frozenset({resident}))
    queue = rig.services.reconcile
    assert queue is not None
    with pytest.raises(NotAuthorizedError):
        queue.list(actor=me)
    [item] = queue.list(actor=rig.hospital_admin("HA"))
    # another hospital's national ID lookup finds no record of HB: refused, nothing filed
    with pytest.raises(NotAuthorizedError):
        queue.assign(item.id, actor=rig.hospital_admin("HB"), national_id=nid)
    settled = queue.assign(item.id, actor=rig.hospital_admin("HA"), national_id=nid)
    assert settled.result["by"] == "national-id"
    study = str(orphan.StudyInstanceUID)
    assert rig.studies("HA")[study]["00100020"]["Value"] == [nid]
    # now the resident's: the policy admits it through the existing link
    from cloudfilm.services.archive.query import parse_search

    found = rig.services.query.search(parse_search("study", []), actor=me)
    assert study in {m["0020000D"]["Value"][0] for m in found.matches}


def test_series_uid_of_another_hospital_under_a_new_study_uid_is_held(rig: Rig) -> None:
    series = generate_uid()
    mine = make_ct(patient_id="A-2", patient_name="Zhao^Lei", series_uid=series)
    assert rig.stow("HA", mine).status_code == 200
    # HB reuses HA's series UID under a study UID of its own: held, not 409
    theirs = make_ct(patient_id="B-3", patient_name="Qian^Yu", series_uid=series)
    assert "series UID" in _held_warning(rig.stow("HB", theirs))
    [item] = rig.queue("HB")
    assert (item["reason"], item["series_instance_uid"]) == ("series-clash", series)
    assert str(theirs.StudyInstanceUID) not in rig.studies("HB")
    assert rig.studies("HA")[str(mine.StudyInstanceUID)]["00201208"]["Value"] == [1]
    # settled as HB's own exam: filed under new UIDs, HA's series untouched
    response = rig.http.post(f"/api/v1/reconciliation/{item['id']}/keep",
                             headers=rig.tokens["HB"])
    assert response.status_code == 200, response.text
    assert set(rig.studies("HB")) == {derived_uid("HB", "study", str(theirs.StudyInstanceUID))}
    assert rig.studies("HA")[str(mine.StudyInstanceUID)]["00201208"]["Value"] == [1]
    # the same hospital's series under another of its own studies is still a conflict
    again = make_ct(patient_id="A-2", patient_name="Zhao^Lei", series_uid=series)
    assert rig.stow("HA", again).status_code == 409


def test_study_uid_clash_is_held_never_mixed_and_never_opens_the_other_study(
        rig: Rig) -> None:
    study, series = generate_uid(), generate_uid()
    mine = make_ct(patient_id="A-1", patient_name="Zhang^San", study_uid=study,
                   series_uid=series)
    assert rig.stow("HA", mine).status_code == 200
    # HB sends a different object of "the same" study, and a byte-identical copy of HA's
    theirs = make_ct(patient_id="B-9", patient_name="Chen^Jie", study_uid=study)
    assert "another hospital" in _held_warning(rig.stow("HB", theirs))
    _held_warning(rig.stow("HB", raw=[to_bytes(mine)]))
    held = rig.queue("HB")
    assert [i["reason"] for i in held] == ["study-clash", "study-clash"]
    # nothing mixed into HA's study, nothing of HA's study shown to HB
    assert rig.studies("HA")[study]["00201208"]["Value"] == [1]
    assert study not in rig.studies("HB")
    for url in (f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/metadata"):
        response = rig.http.get(url, headers={**rig.tokens["HB"], "Accept": "*/*"})
        assert response.status_code == 403, url
    assert rig.queue("HA") == []
    for item in held:
        for action in ("copy", "keep"):
            response = rig.http.post(f"/api/v1/reconciliation/{item['id']}/{action}",
                                     headers=rig.tokens["HA"])
            assert response.status_code == 403
    # HB: the copy is closed (no access gained), its own exam is filed under new UIDs
    copy_item = next(i for i in held if i["sop_instance_uid"] == str(mine.SOPInstanceUID))
    own_item = next(i for i in held if i["sop_instance_uid"] == str(theirs.SOPInstanceUID))
    response = rig.http.post(f"/api/v1/reconciliation/{copy_item['id']}/copy",
                             headers=rig.tokens["HB"])
    assert response.status_code == 200 and response.json()["state"] == "copy"
    assert rig.http.get(f"/dicomweb/studies/{study}/metadata",
                        headers=rig.tokens["HB"]).status_code == 403
    response = rig.http.post(f"/api/v1/reconciliation/{own_item['id']}/keep",
                             headers=rig.tokens["HB"])
    assert response.status_code == 200, response.text
    new_study = response.json()["result"]["study_instance_uid"]
    assert new_study == derived_uid("HB", "study", study)
    hb = rig.studies("HB")
    assert set(hb) == {new_study} and hb[new_study]["00100020"]["Value"] == ["B-9"]
    assert new_study not in rig.studies("HA")
    assert rig.studies("HA")[study]["00201208"]["Value"] == [1]
    # resending either original adds nothing
    rig.stow("HB", theirs, mine)
    assert len(rig.queue("HB", "all")) == 2 and rig.queue("HB") == []
    # administrators see every hospital's items
    assert {i["hospital"] for i in rig.queue(None, "all")} == {"HB"}


def test_cli_lists_and_settles(rig: Rig, settings: Settings,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudfilm.cli.main import cli

    ds = make_ct(patient_id="")
    _held_warning(rig.stow("HA", ds))
    settings_to_env(monkeypatch, settings, rig.db_url)
    runner = CliRunner()
    listed = runner.invoke(cli, ["reconcile", "list"])
    assert listed.exit_code == 0, listed.output
    assert "no-patient-id" in listed.output and "HA" in listed.output
    item_id = rig.queue("HA")[0]["id"]
    done = runner.invoke(cli, ["reconcile", "assign", str(item_id), "--patient-id", "P-5"])
    assert done.exit_code == 0, done.output
    assert "assigned" in done.output
    wrong = runner.invoke(cli, ["reconcile", "copy", str(item_id)])
    assert wrong.exit_code == 1 and "settled already" in wrong.output


def test_real_files_with_empty_patient_id_are_held(services: Services,
                                                   tmp_path: Path) -> None:
    files = [shared_file(f) for f in ("ct/CT-MONO2-16-ankle.dcm", "ct/ELSCINT1_raw.dcm",
                                      "xray/DX_JPEG2KLossless_16bit.dcm",
                                      "reports/basic_text_SR_offis.dcm")]
    for f in files:
        assert not str(dcmread(f, stop_before_pixels=True).get("PatientID", "") or "").strip()
    services.hospitals.register(HospitalInput(code="HR", name="Hospital R", level="primary"))
    console = Console(file=io.StringIO(), width=200)
    summary = run_import(services, files, workers=2, console=console,
                         sender=sender_for(services, "HR"))
    assert (summary.held, summary.failed, summary.stored) == (4, 0, 0)
    assert "held for reconciliation 4" in console.file.getvalue()  # type: ignore[attr-defined]
    queue = services.reconcile
    assert queue is not None
    items = queue.list(actor=LOCAL_OPERATOR)
    assert len(items) == 4
    # a held report is no report yet; once assigned it is recorded with its study
    sr = dcmread(files[3], stop_before_pixels=True)
    study = str(sr.StudyInstanceUID)
    assert services.reports.study_reports(study, actor=LOCAL_OPERATOR) == []
    for item in items:
        settled = queue.assign(item.id, patient_id="R-1")
        assert settled.state == "assigned" and settled.result["outcome"] == "stored"
    [report] = services.reports.study_reports(study, actor=LOCAL_OPERATOR)
    assert report.study_instance_uid == study



def test_concurrent_resends_of_a_held_object_make_one_item(rig: Rig, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cloudfilm.services.archive.ingest import IngestItem, Sender

    data = to_bytes(make_ct(patient_id=""))
    sender = Sender(hospital_code="HA", hospital_name="Hospital HA", door="test")

    def send(n: int) -> str:
        path = tmp_path / f"copy{n}.dcm"
        path.write_bytes(data)
        [result] = rig.services.ingest.ingest_files([IngestItem(path, move=True)],
                                                    sender=sender)
        return str(getattr(result, "outcome", result))

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(send, range(8)))
    assert outcomes == ["held"] * 8
    assert rig.count("SELECT count(*) FROM reconciliation_item") == 1
    assert rig.count("SELECT count(*) FROM audit_event WHERE action = 'archive.held'") == 1
    assert rig.services.maintenance.sweep_orphans(min_age_seconds=0).removed == 0
