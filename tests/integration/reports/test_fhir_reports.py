"""FHIR R4 DiagnosticReport through the REST door: linking (before and after the images,
by UID and by accession number), versions and amendments, bad input, access and audit,
Chinese search, HTML/PDF, and upload timeliness. Both databases."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from pypdf import PdfReader
from tests.conftest import IN_CI, settings_to_env
from tests.factories import make_ct, to_bytes
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.access.test_policy_matrix import audit_rows
from tests.integration.reports.support import FINDINGS, IMPRESSION, fhir_report

from cloudfilm.infrastructure.reports.render import cjk_font_available
from cloudfilm.interfaces.api.auth import authenticate
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.errors import NotAuthorizedError

FHIR_URL = "/api/v1/fhir/DiagnosticReport"


@pytest.fixture
def http(province: Province) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(province.services)) as client:
        yield client


def hospital_headers(p: Province, code: str) -> dict[str, str]:
    token = p.services.credentials.issue(code).token
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def send(http: TestClient, headers: dict[str, str], resource: dict) -> dict:
    response = http.post(FHIR_URL, content=orjson.dumps(resource), headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def as_actor(client: TestClient, actor: Actor) -> None:
    client.app.dependency_overrides[authenticate] = lambda: actor  # type: ignore[attr-defined]


def ingest_ct(p: Province, tmp_path: Path, code: str, *, study_uid: str, accession: str,
              patient_id: str, study_time: str = "101500") -> None:
    ds = make_ct(patient_id=patient_id, study_uid=study_uid, AccessionNumber=accession)
    ds.StudyTime = study_time
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    [result] = p.services.ingest.ingest_files([IngestItem(path)],
                                              sender=Sender(code, f"Hospital {code}", "test"))
    assert not isinstance(result, Exception), result


def patient_of(p: Province, study_uid: str) -> str:
    """The PatientID the province fixture stored a study under (its national ID)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(p.db_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text(
                "SELECT p.patient_id FROM study s JOIN patient p ON p.id = s.patient_fk "
                "WHERE s.study_instance_uid = :u"), {"u": study_uid}).scalar_one())
    finally:
        engine.dispose()


# --- linking ---------------------------------------------------------------------------------


def test_report_for_a_stored_study_is_linked_and_readable(province: Province,  # noqa: F811
                                                          http: TestClient) -> None:
    p = province
    body = send(http, hospital_headers(p, "HA"), fhir_report(study_uid=p.sa1))
    assert (body["outcome"], body["link_state"], body["status"], body["version"]) == \
        ("created", "linked", "final", 1)
    listed = http.get(f"/api/v1/studies/{p.sa1}/reports").json()  # local operator
    assert [r["report_id"] for r in listed] == [body["report_id"]]
    assert listed[0]["findings"] == FINDINGS
    assert listed[0]["impression"] == IMPRESSION
    assert (listed[0]["author"], listed[0]["verifier"]) == ("李医生", "张主任")
    assert listed[0]["title"] == "CT 胸部平扫"
    assert listed[0]["hospital_code"] == "HA"


def test_report_before_images_is_held_then_linked_when_they_come(
        province: Province, http: TestClient, tmp_path: Path) -> None:  # noqa: F811
    p = province
    study = generate_uid()
    body = send(http, hospital_headers(p, "HA"), fhir_report(key="EARLY", study_uid=study))
    assert body["link_state"] == "held"
    assert http.get(f"/api/v1/studies/{study}/reports").json() == []  # no study yet
    held = http.get(f"/api/v1/reports/{body['report_id']}").json()
    assert held["link_state"] == "held"
    waiting = http.get("/api/v1/reports", params={"link_state": "held"}).json()
    assert [r["report_id"] for r in waiting] == [body["report_id"]]

    ingest_ct(p, tmp_path, "HA", study_uid=study, accession="X1", patient_id="P0001",
              study_time="101500")
    linked = http.get(f"/api/v1/studies/{study}/reports").json()
    assert [r["report_id"] for r in linked] == [body["report_id"]]
    assert http.get("/api/v1/reports", params={"link_state": "held"}).json() == []
    assert linked[0]["link_state"] == "linked"
    # The exam time is now the study's (StudyDate/StudyTime in Asia/Shanghai), in UTC.
    assert linked[0]["exam_at"].startswith("2024-01-05T02:15:00")


def test_report_by_accession_only_links_to_the_senders_study(
        province: Province, http: TestClient, tmp_path: Path) -> None:  # noqa: F811
    p = province
    before = send(http, hospital_headers(p, "HA"), fhir_report(key="ACC-A", accession="ACC-77"))
    assert before["link_state"] == "held"
    study = generate_uid()
    # Another hospital's study with the same accession number does not take the report.
    ingest_ct(p, tmp_path, "HB", study_uid=generate_uid(), accession="ACC-77",
              patient_id="HBP1")
    assert http.get(f"/api/v1/reports/{before['report_id']}").json()["link_state"] == "held"
    ingest_ct(p, tmp_path, "HA", study_uid=study, accession="ACC-77", patient_id="P0001")
    detail = http.get(f"/api/v1/reports/{before['report_id']}").json()
    assert (detail["link_state"], detail["study_instance_uid"]) == ("linked", study)
    # Images first, report second: linked at once by accession number.
    after = send(http, hospital_headers(p, "HA"), fhir_report(key="ACC-B", accession="ACC-77"))
    assert (after["link_state"], after["study_instance_uid"]) == ("linked", study)


def test_report_claiming_another_hospitals_study_is_refused(province: Province,  # noqa: F811
                                                            http: TestClient) -> None:
    p = province
    response = http.post(FHIR_URL, content=orjson.dumps(fhir_report(study_uid=p.sb1)),
                         headers=hospital_headers(p, "HA"))
    assert response.status_code == 403
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "another hospital" in outcome["issue"][0]["diagnostics"]
    assert http.get(f"/api/v1/studies/{p.sb1}/reports").json() == []


# --- versions ----------------------------------------------------------------------------------


def test_amendment_keeps_every_version_and_resend_is_harmless(
        province: Province, http: TestClient) -> None:  # noqa: F811
    p = province
    headers = hospital_headers(p, "HA")
    first = send(http, headers, fhir_report(key="AMEND", study_uid=p.sa1, status="preliminary",
                                            issued="2024-01-05T11:00:00+08:00"))
    again = send(http, headers, fhir_report(key="AMEND", study_uid=p.sa1, status="preliminary",
                                            issued="2024-01-05T11:00:00+08:00"))
    assert (again["outcome"], again["version"]) == ("duplicate", 1)
    final = send(http, headers, fhir_report(key="AMEND", study_uid=p.sa1, status="final",
                                            issued="2024-01-05T12:00:00+08:00"))
    amended = send(http, headers, fhir_report(
        key="AMEND", study_uid=p.sa1, status="amended", impression="右肺上叶结节，考虑炎性。",
        issued="2024-01-06T09:00:00+08:00"))
    assert (final["version"], amended["version"]) == (2, 3)
    assert first["report_id"] == final["report_id"] == amended["report_id"]
    # A version issued before the current one arrives late: kept, but does not take over.
    late = send(http, headers, fhir_report(key="AMEND", study_uid=p.sa1, status="final",
                                           impression="迟到的旧版本",
                                           issued="2024-01-05T11:30:00+08:00"))
    assert (late["version"], late["status"]) == (4, "amended")

    detail = http.get(f"/api/v1/reports/{first['report_id']}").json()
    assert (detail["status"], detail["version"], detail["versions"]) == ("amended", 3, 4)
    assert detail["impression"] == "右肺上叶结节，考虑炎性。"
    history = detail["history"]
    assert [(v["version"], v["status"]) for v in history] == [
        (1, "preliminary"), (2, "final"), (3, "amended"), (4, "final")]
    assert history[1]["impression"] == IMPRESSION  # the amendment erased nothing
    # An amendment that names another study is refused, not silently moved.
    response = http.post(FHIR_URL, content=orjson.dumps(fhir_report(
        key="AMEND", study_uid=generate_uid(), status="amended")), headers=headers)
    assert response.status_code == 409


def test_cancelled_report_keeps_its_history(province: Province,  # noqa: F811
                                            http: TestClient) -> None:
    p = province
    headers = hospital_headers(p, "HA")
    first = send(http, headers, fhir_report(key="CXL", study_uid=p.sa1))
    cancelled = send(http, headers, fhir_report(key="CXL", study_uid=p.sa1, status="cancelled",
                                                issued="2024-01-06T08:00:00+08:00"))
    assert cancelled["status"] == "cancelled"
    detail = http.get(f"/api/v1/reports/{first['report_id']}").json()
    assert [v["status"] for v in detail["history"]] == ["final", "cancelled"]
    assert detail["history"][0]["findings"] == FINDINGS
    page = http.get(f"/api/v1/reports/{first['report_id']}/html?lang=zh-CN").text
    assert "作废" in page


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.pop("status"), "DiagnosticReport.status"),
    (lambda r: r.update(status="bogus"), "DiagnosticReport.status"),
    (lambda r: r.update(resourceType="Observation"), "DiagnosticReport.resourceType"),
    (lambda r: r.pop("imagingStudy"), "DiagnosticReport.imagingStudy"),
    (lambda r: r.pop("identifier"), "DiagnosticReport.identifier"),
])
def test_malformed_fhir_gets_an_operation_outcome_naming_the_field(
        province: Province, http: TestClient, mutate, field: str) -> None:  # noqa: F811
    p = province
    resource = fhir_report(key="BAD", study_uid=p.sa1)
    mutate(resource)
    response = http.post(FHIR_URL, content=orjson.dumps(resource),
                         headers=hospital_headers(p, "HA"))
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"][0].startswith(field), issue
    assert http.get(f"/api/v1/studies/{p.sa1}/reports").json() == []  # nothing half-written


def test_not_json_oversized_and_unauthenticated_bodies_are_refused(
        province: Province, http: TestClient) -> None:  # noqa: F811
    p = province
    headers = hospital_headers(p, "HA")
    response = http.post(FHIR_URL, content=b"{not json", headers=headers)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["DiagnosticReport"]
    limit = p.services.reports.max_bytes
    response = http.post(FHIR_URL, content=b" " * (limit + 1), headers=headers)
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["text"] == "report-too-large"
    response = http.post(FHIR_URL, content=orjson.dumps(fhir_report(study_uid=p.sa1)),
                         headers={"Authorization": "Bearer cfh_wrong"})
    assert response.status_code == 401


def test_people_cannot_send_reports(province: Province) -> None:  # noqa: F811
    p = province
    with pytest.raises(NotAuthorizedError):
        p.services.reports.receive_fhir(orjson.dumps(fhir_report(study_uid=p.sa1)),
                                        actor=p.doctor)
    assert audit_rows(p.db_url)[0].reason == "not-a-sender"


# --- access ------------------------------------------------------------------------------------


def test_reports_follow_the_access_policy_and_are_audited(
        province: Province, http: TestClient) -> None:  # noqa: F811
    p = province
    ha = send(http, hospital_headers(p, "HA"), fhir_report(key="A1", study_uid=p.sa1))
    hb = send(http, hospital_headers(p, "HB"), fhir_report(key="B1", study_uid=p.sb1))
    held_hb = send(http, hospital_headers(p, "HB"),
                   fhir_report(key="B2", study_uid=generate_uid()))

    as_actor(http, p.doctor)
    assert http.get(f"/api/v1/reports/{ha['report_id']}").status_code == 200
    for url in (f"/api/v1/reports/{hb['report_id']}", f"/api/v1/reports/{hb['report_id']}/html",
                f"/api/v1/reports/{hb['report_id']}/pdf", f"/api/v1/studies/{p.sb1}/reports",
                f"/api/v1/reports/{held_hb['report_id']}", "/api/v1/reports/0123456789abcdef"):
        response = http.get(url)
        assert response.status_code == 403, url
        assert audit_rows(p.db_url)[0].outcome == "denied"
    found = {r["report_id"] for r in http.get("/api/v1/reports", params={"q": "结节"}).json()}
    assert found == {ha["report_id"]}

    # A grant for one study opens that study's report, not the held one.
    p.grant(p.doctor, p.r1, uids=[p.sb1])
    assert http.get(f"/api/v1/reports/{hb['report_id']}").status_code == 200
    row = audit_rows(p.db_url)[0]
    assert (row.action, row.outcome, row.reason, row.resident_id) == \
        ("report", "allowed", "grant", p.r1)
    assert http.get(f"/api/v1/reports/{held_hb['report_id']}").status_code == 403
    found = {r["report_id"] for r in http.get("/api/v1/reports", params={"q": "结节"}).json()}
    assert found == {ha["report_id"], hb["report_id"]}
    # Another doctor of the same hospital has no grant; an expired grant opens nothing.
    as_actor(http, p.other_doctor)
    p.grant(p.other_doctor, p.r1, expired=True)
    assert http.get(f"/api/v1/reports/{hb['report_id']}").status_code == 403

    # Residents see the reports of their own records only.
    as_actor(http, p.resident(p.r1))
    assert http.get(f"/api/v1/reports/{hb['report_id']}").status_code == 200
    as_actor(http, p.resident(p.r2))
    assert http.get(f"/api/v1/reports/{hb['report_id']}").status_code == 403
    assert http.get("/api/v1/reports", params={"q": "结节"}).json() == []
    # Another hospital's system sees neither the report nor, in a search, its existence.
    as_actor(http, p.hospital("HA"))
    assert http.get(f"/api/v1/reports/{held_hb['report_id']}").status_code == 403
    as_actor(http, p.hospital("HB"))
    assert http.get(f"/api/v1/reports/{held_hb['report_id']}").status_code == 200


# --- search ------------------------------------------------------------------------------------


def test_chinese_full_text_search(province: Province, http: TestClient) -> None:  # noqa: F811
    p = province
    headers = hospital_headers(p, "HA")
    nodule = send(http, headers, fhir_report(key="S1", study_uid=p.sa1))
    liver = send(http, headers, fhir_report(
        key="S2", study_uid=p.sa1, title="MR 上腹部增强",
        findings="肝脏形态大小正常，肝右叶见一囊性低密度影，直径约12mm。",
        impression="肝囊肿。Liver cyst, benign."))

    def found(q: str, **params: str) -> set[str]:
        response = http.get("/api/v1/reports", params={"q": q, **params})
        assert response.status_code == 200, response.text
        return {r["report_id"] for r in response.json()}

    a, b = nodule["report_id"], liver["report_id"]
    assert found("结节") == {a}
    assert found("磨玻璃结节") == {a}
    assert found("肝囊肿") == {b}
    assert found("囊") == {b}  # one character
    assert found("肺") == {a}
    assert found("右肺 结节") == {a}  # every term
    assert found("右肺 囊肿") == set()
    assert found("结肝") == set()  # characters of both, never adjacent
    assert found("cyst") == {b}
    assert found("LIVER") == {b}  # case-insensitive
    assert found("１２ｍｍ") == {b}  # full-width digits and letters fold to ASCII
    assert found("") == {a, b}
    assert found("", status="final") == {a, b}
    assert found("结节", hospital="HB") == set()
    response = http.get("/api/v1/reports", params={"q": "%_\\"})
    assert response.status_code in (200, 400)
    assert http.get("/api/v1/reports", params={"q": "结节", "status": "nope"}).status_code == 422


# --- renderings ------------------------------------------------------------------------------


def test_html_and_pdf_in_chinese_and_english(province: Province,  # noqa: F811
                                            http: TestClient) -> None:
    p = province
    body = send(http, hospital_headers(p, "HA"), fhir_report(
        key="R", study_uid=p.sa1, findings=FINDINGS + "\n<script>alert(1)</script>"))
    page = http.get(f"/api/v1/reports/{body['report_id']}/html")
    assert page.status_code == 200
    assert page.headers["content-language"] == "zh-CN"
    assert "磨玻璃结节" in page.text and "<script>alert" not in page.text
    english = http.get(f"/api/v1/reports/{body['report_id']}/html",
                       headers={"Accept-Language": "en-US,en;q=0.9"})
    assert english.headers["content-language"] == "en"
    assert "Impression" in english.text
    pdf = http.get(f"/api/v1/reports/{body['report_id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].startswith("attachment")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    if cjk_font_available() or IN_CI:  # .ci/run installs fonts-noto-cjk
        assert "磨玻璃结节" in text.replace("\n", "")
    rows = audit_rows(p.db_url, 2)
    assert rows[0].action == "download"
    assert rows[1].action == "render"  # one record per download, not two


def test_a_pdf_sent_inline_is_returned_as_sent(province: Province,  # noqa: F811
                                               http: TestClient) -> None:
    p = province
    original = b"%PDF-1.4\n% the hospital's own layout\n%%EOF\n"
    body = send(http, hospital_headers(p, "HA"), fhir_report(key="P", study_uid=p.sa1,
                                                             pdf=original))
    assert http.get(f"/api/v1/reports/{body['report_id']}/pdf").content == original


# --- timeliness ------------------------------------------------------------------------------


def test_upload_timeliness_per_hospital(province: Province, tmp_path: Path) -> None:  # noqa: F811
    p = province
    svc = p.services.reports
    now = datetime.now(UTC)
    local = (now + timedelta(hours=8))  # Asia/Shanghai has no daylight saving
    on_time_exam = local - timedelta(hours=2)
    late_exam = local - timedelta(hours=20)
    for uid, exam in ((on_time_uid := generate_uid(), on_time_exam),
                      (generate_uid(), late_exam)):
        ds = make_ct(patient_id="T1", study_uid=uid)
        ds.StudyDate, ds.StudyTime = exam.strftime("%Y%m%d"), exam.strftime("%H%M%S")
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        [result] = p.services.ingest.ingest_files([IngestItem(path)],
                                                  sender=Sender("HA", "Hospital HA", "test"))
        assert not isinstance(result, Exception)
    svc.receive_fhir(orjson.dumps(fhir_report(key="T", study_uid=on_time_uid)),
                     actor=p.hospital("HA"))
    figures = svc.timeliness(actor=p.hospital("HA"), since=now - timedelta(days=2),
                             until=now + timedelta(hours=1))
    assert len(figures) == 1
    ha = figures[0]
    assert (ha.hospital_code, ha.studies, ha.studies_on_time, ha.studies_late) == \
        ("HA", 2, 1, 1)
    assert 19.9 * 3600 < ha.studies_max_delay_s < 20.1 * 3600
    assert (ha.reports, ha.reports_on_time, ha.studies_without_report) == (1, 1, 1)
    # A hospital sees only itself; residents see nothing; administrators everything.
    everyone = svc.timeliness(actor=Actor(kind="admin", subject="admin"),
                              since=now - timedelta(days=2), until=now + timedelta(hours=1))
    assert {t.hospital_code for t in everyone} == {"HA"}
    with pytest.raises(NotAuthorizedError):
        svc.timeliness(actor=p.resident(p.r1), since=now - timedelta(days=1), until=now)


def test_report_racing_the_transaction_that_creates_its_study_is_linked(
        province: Province, db_url: str) -> None:  # noqa: F811
    """PostgreSQL: a report checked while its study's ingest transaction is still open
    waits for that commit (advisory lock) instead of being held forever."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: no such race")
    import threading

    from cloudfilm.infrastructure.db import archive_repository
    from cloudfilm.services.reports.intake import ReportIntake

    p = province
    svc = p.services
    study = generate_uid()
    db = svc.health._db
    result: dict = {}

    def receive() -> None:
        result["recorded"] = svc.reports.receive_fhir(
            orjson.dumps(fhir_report(key="RACE", study_uid=study)), actor=p.hospital("HA"))

    with db.write() as session:
        now = datetime.now(UTC)
        patient = archive_repository.upsert_patient(session, hospital_id=p.ha, values={
            "patient_id": "RACE1", "issuer_of_patient_id": "", "patient_name": "",
            "name_search": "", "birth_date": "", "sex": "", "updated_at": now})
        row = archive_repository.create_study(session, {
            "study_instance_uid": study, "patient_fk": patient, "hospital_id": p.ha,
            "received_at": now, "updated_at": now})
        ReportIntake(UTC).after_index(session, hospital_id=p.ha, door="test", entries=[],
                                      created_studies=[row])
        worker = threading.Thread(target=receive)
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # waiting for this transaction, not deciding "held"
    worker.join(10)
    assert result["recorded"].link_state == "linked"


def test_cli_lists_held_reports_and_timeliness(province: Province, settings: Any,  # noqa: F811
                                               db_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cloudfilm.cli.main import cli

    p = province
    held = p.services.reports.receive_fhir(
        orjson.dumps(fhir_report(key="CLI", study_uid=generate_uid())), actor=p.hospital("HB"))
    settings_to_env(monkeypatch, settings, db_url)
    runner = CliRunner()
    result = runner.invoke(cli, ["reports", "held"])
    assert result.exit_code == 0, result.output
    assert held.report_id in result.output and "HB" in result.output
    assert runner.invoke(cli, ["reports", "held", "--hospital", "HA"]).output.strip() \
        .endswith("no held reports")
    result = runner.invoke(cli, ["reports", "timeliness", "--days", "366"])
    assert result.exit_code == 0, result.output
    assert "deadline 12 h" in result.output
