"""Issue 11 finding 5: the access log is complete. Every answer that carries a resident's
data records that resident (one record per answer naming every resident, whoever asks,
own hospital included), with every UID; the resident's "who looked at my data" shows it.
Attack-matrix style, both databases."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import event
from sqlalchemy.engine import Engine
from tests.integration.access.conftest import NID1, NID2, Province, _ingest
from tests.integration.access.test_policy_doors import as_actor
from tests.integration.access.test_policy_matrix import audit_rows
from tests.integration.dimse.support import SCP_AE, running_server
from tests.integration.reports.support import fhir_report

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.identity import national_id
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR


@pytest.fixture
def http(province: Province) -> Iterator[TestClient]:
    with TestClient(create_app(province.services)) as client:
        yield client


def _searches(rows: list[Any]) -> dict[int | None, list[str]]:
    """resident -> listed UIDs of the last answer's search record (None: the UIDs linked to
    nobody). One record per answer: exactly one search record on top."""
    assert rows and rows[0].action == "search", rows[:1]
    row = rows[0]
    detail = orjson.loads(row.detail)
    uids = detail.get("studies", detail.get("reports"))
    if not isinstance(detail["residents"], list):  # one resident (or none): theirs
        assert detail["residents"] == (row.resident_id is not None)
        return {row.resident_id: uids}
    assert row.resident_id is None
    out: dict[int | None, list[str]] = {
        int(r): listed for r, listed in detail["by_resident"].items()}
    assert sorted(out) == detail["residents"]
    named = {u for listed in out.values() for u in listed}
    assert named <= set(uids)
    if set(uids) - named:
        out[None] = sorted(set(uids) - named)
    return out


def _log(http: TestClient, p: Province, rid: int) -> list[dict[str, Any]]:
    as_actor(http, p.resident(rid))
    response = http.get("/api/v1/me/access-log", params={"limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_qido_instances_of_two_patients_records_each_resident(province: Province,
                                                              http: TestClient) -> None:
    p = province
    p.grant(p.doctor, p.r1)
    p.grant(p.doctor, p.r2)
    as_actor(http, p.doctor)
    response = http.get("/dicomweb/instances", params={
        "StudyInstanceUID": f"{p.sb1}\\{p.sb2}", "includefield": "all"})
    assert response.status_code == 200, response.text
    assert {m["0020000D"]["Value"][0] for m in response.json()} == {p.sb1, p.sb2}
    got = _searches(audit_rows(p.db_url, 5))
    assert got == {p.r1: [p.sb1], p.r2: [p.sb2]}
    for rid in (p.r1, p.r2):  # each sees the search once, the other's record not at all
        seen = [e for e in _log(http, p, rid) if e["who"] == "Dr 1"]
        assert [e["action"] for e in seen] == ["search"], (rid, seen)


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_every_qido_level_records_every_resident(province: Province, level: str) -> None:
    p = province
    admin_like = p.hospital("HB")  # own-hospital staff: both of HB's patients
    p.services.query.search(parse_search(level, []), actor=admin_like)
    assert _searches(audit_rows(p.db_url, 5)) == {p.r1: [p.sb1], p.r2: [p.sb2]}


def test_own_hospital_reads_show_in_the_residents_log(province: Province,
                                                      http: TestClient) -> None:
    p = province
    token = p.services.credentials.issue("HB").token
    as_actor(http, None)
    response = http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    series, _ = p.uids[p.sa1]
    as_actor(http, p.doctor)  # HA's own doctor reads HA's study of R1
    assert http.get(f"/dicomweb/studies/{p.sa1}/series/{series}/metadata").status_code == 200
    log = _log(http, p, p.r1)
    assert {(e["hospital"], e["action"]) for e in log} >= {("Hospital HB", "search"),
                                                           ("Hospital HA", "metadata")}
    # The set-up's own identity work (the operator's look-ups) is in the log too; of the
    # reads of R2's images, only HB's search.
    assert {e["hospital"] for e in _log(http, p, p.r2)
            if e["kind"] not in ("admin", "operator")} == {"Hospital HB"}


def test_report_search_records_every_resident(province: Province, http: TestClient) -> None:
    p = province
    hb = p.hospital("HB")
    for key, study in (("K1", p.sb1), ("K2", p.sb2)):
        p.services.reports.receive_fhir(orjson.dumps(fhir_report(key=key, study_uid=study)),
                                        actor=hb)
    p.grant(p.doctor, p.r1)
    p.grant(p.doctor, p.r2)
    as_actor(http, p.doctor)
    response = http.get("/api/v1/reports", params={"limit": 500})
    assert response.status_code == 200, response.text
    found = response.json()
    found = found.get("reports", found) if isinstance(found, dict) else found
    assert len(found) == 2
    got = _searches(audit_rows(p.db_url, 5))
    assert set(got) == {p.r1, p.r2} and all(len(v) == 1 for v in got.values())
    for rid in (p.r1, p.r2):
        assert [e["action"] for e in _log(http, p, rid) if e["who"] == "Dr 1"] == ["search"]


_RNG = random.Random(11)
_FAMILY = ["Li", "Zhou", "Wu", "Zheng", "Feng"]
_GIVEN = ["Na", "Jing", "Min", "Jun", "Yan"]


def _statements(engine_calls: list[str]) -> Any:
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        engine_calls.append(statement)
    return before


def test_many_residents_and_uids_one_record_nothing_cut(province: Province,
                                                        tmp_path: Path) -> None:
    """25 more residents and 25 more studies of R2 at HB: the search of HB's studies is one
    record naming 27 residents, all 26 of R2's studies under R2, the unlinked one too; one
    INSERT into the trail; each resident's access log shows it once; the chain (and the
    residents' index rows) still verifies."""
    p = province
    nids: set[str] = set()
    while len(nids) < 25:
        # the synthetic CT's birth date and sex, so that the national IDs link
        nids.add(national_id.generate(area_code="330106", birth_date=date(1960, 1, 2),
                                      sex="M", rng=_RNG))
    for i, nid in enumerate(sorted(nids - {NID1, NID2})):
        _ingest(p.services, tmp_path, "HB", nid, f"{_FAMILY[i % 5]}^{_GIVEN[i // 5]}")
    extra_r2 = [_ingest(p.services, tmp_path, "HB", NID2, "Zhao^Lei")[0]
                for _ in range(25)]
    # an ID whose birth date and sex are not the header's: a conflict, linked to nobody
    odd = national_id.generate(area_code="330106", birth_date=date(1990, 5, 6), sex="F",
                               rng=_RNG)
    conflict, _, _ = _ingest(p.services, tmp_path, "HB", odd, "Qian^Duoduo")
    calls: list[str] = []
    listener = _statements(calls)
    before = len(audit_rows(p.db_url, 10_000))
    event.listen(Engine, "before_cursor_execute", listener)
    try:
        result = p.services.query.search(parse_search("study", [("limit", "100")]),
                                         actor=p.hospital("HB"))
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
    assert len(result.matches) == 53
    assert len(audit_rows(p.db_url, 10_000)) == before + 1  # one record for the answer
    got = _searches(audit_rows(p.db_url, 40))
    residents = [r for r in got if r is not None]
    assert len(residents) == 27
    assert got[p.r2] == sorted([p.sb2, *extra_r2])
    assert got[None] == [conflict]
    inserts = [c for c in calls if re.search(r"INSERT INTO audit_event\b(?!_)", c)]
    assert len(inserts) == 1, inserts
    for rid in residents:  # every resident named finds it, in the newest few records
        rows = p.services.audit.events(LOCAL_OPERATOR, resident_id=rid, limit=3)
        assert [e["action"] for e in rows if e["action"] == "search"
                and e["actor_subject"] == "HB"][:1] == ["search"], rid
    assert p.services.audit.verify().ok


def test_c_find_records_every_resident(province: Province) -> None:
    p = province
    p.services.peers.register("HB_PACS", "127.0.0.1", 104, hospital_code="HB")
    with running_server(p.services) as server:
        ae = AE(ae_title="HB_PACS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=SCP_AE)
        assert assoc.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            found = [ident.StudyInstanceUID for status, ident in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind) if status.Status == 0xFF00]
        finally:
            assoc.release()
    assert set(found) == {p.sb1, p.sb2}
    assert _searches(audit_rows(p.db_url, 5)) == {p.r1: [p.sb1], p.r2: [p.sb2]}
