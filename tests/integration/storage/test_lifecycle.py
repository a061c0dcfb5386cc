"""Retention and legal hold: rules as data (default 30 years, per modality, minors), the
review list, deletion only in two audited steps by two administrators, and a legal hold
that refuses a deletion; the CLI and the REST API over the same service."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import settings_to_env
from tests.factories import make_ct, to_bytes

from cloudfilm.cli.main import cli
from cloudfilm.config import Settings
from cloudfilm.infrastructure.db.models import AuditEvent, Instance, Study
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError
from cloudfilm.services.kernel.actor import Actor
from cloudfilm.services.lifecycle.service import LifecycleService, RuleInput

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")
ADMIN_A = Actor(kind="admin", subject="admin-a", display="A")
ADMIN_B = Actor(kind="admin", subject="admin-b", display="B")
DOCTOR = Actor(kind="doctor", subject="doc-1", hospital_id=1, hospital_code="H1")
TODAY = date(2026, 12, 3)


def _study(services: Services, tmp_path: Path, *, date_: str, modality: str = "CT",
           patient: str = "P1", birth: str = "19600102", description: str = "CT CHEST",
           n: int = 2) -> str:
    study, series = make_ct().StudyInstanceUID, make_ct().SeriesInstanceUID
    for i in range(n):
        ds = make_ct(study_uid=study, series_uid=series, instance_number=i + 1,
                     patient_id=patient)
        ds.StudyDate, ds.Modality, ds.PatientBirthDate = date_, modality, birth
        ds.StudyDescription = description
        path = tmp_path / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(to_bytes(ds))
        services.ingest.ingest_file(path, sender=SENDER)
    return str(study)


def _life(services: Services) -> LifecycleService:
    assert services.lifecycle is not None
    return services.lifecycle


def test_rules_decide_the_review_list(services: Services, tmp_path: Path) -> None:
    life = _life(services)
    old = _study(services, tmp_path, date_="19900105")
    young = _study(services, tmp_path, date_="20200105")
    cr = _study(services, tmp_path, date_="20100105", modality="CR", description="CHEST PA")
    child = _study(services, tmp_path, date_="20120105", modality="CR", patient="KID",
                   birth="20100101", description="CHEST PA")
    assert {d.study_instance_uid for d in life.review(ADMIN_A, today=TODAY)} == {old}
    life.add_rule(ADMIN_A, RuleInput(name="CR 10 years, minors to 18+10", years=10,
                                     modality="CR", minor_age=18, minor_years=10))
    due = {d.study_instance_uid: d for d in life.review(ADMIN_A, today=TODAY)}
    assert set(due) == {old, cr}  # the child's CR is kept until 2038
    assert due[cr].rule.startswith("CR 10") and due[cr].retention_end == "2020-01-05"
    assert due[old].rule == "default" and due[old].retention_end == "2020-01-05"
    assert life.retention_of(ADMIN_A, child)[0] == "2038-01-01"
    assert life.retention_of(ADMIN_A, young)[0] == "2050-01-05"
    with pytest.raises(NotAuthorizedError):
        life.review(DOCTOR, today=TODAY)


def test_deletion_takes_two_administrators_and_a_hold_refuses_it(
        services: Services, tmp_path: Path) -> None:
    life = _life(services)
    first = _study(services, tmp_path, date_="19900105")
    second = _study(services, tmp_path, date_="19910105", patient="P2")
    kept = _study(services, tmp_path, date_="20200105")
    with pytest.raises(NotAuthorizedError):
        life.propose_deletion(DOCTOR, reason="retention over", today=TODAY)
    request = life.propose_deletion(ADMIN_A, reason="retention over", today=TODAY)
    assert set(request.studies) == {first, second} and request.objects == 4
    with pytest.raises(InvalidInputError, match="another administrator"):
        life.execute_deletion(ADMIN_A, request.id, today=TODAY)
    hold = life.place_hold(ADMIN_A, reason="court order", hospital_code="H1",
                           patient_id="P2")
    done = life.execute_deletion(ADMIN_B, request.id, today=TODAY)
    assert done.state == "executed"
    assert done.result == {first: "deleted", second: "legal-hold"}
    with services.health._db.read() as session:
        left = set(session.scalars(select(Study.study_instance_uid)))
        instances = session.execute(select(Instance.blob_key)).all()
        actions = list(session.scalars(select(AuditEvent.action)
                                       .where(AuditEvent.action.like("retention.%")
                                              | AuditEvent.action.like("legal_hold.%"))))
    assert left == {second, kept}
    blobs = services.retrieve._blobs
    assert {b.key for b in blobs.iter_blobs()} == {r.blob_key for r in instances}
    assert "retention.propose" in actions and "retention.execute" in actions
    assert actions.count("retention.delete") == 1 and "legal_hold.place" in actions
    # the held study is not even proposed while held; after release it is
    assert life.review(ADMIN_A, today=TODAY)[0].held
    with pytest.raises(InvalidInputError, match="no study is due"):
        life.propose_deletion(ADMIN_A, reason="again", today=TODAY)
    life.release_hold(ADMIN_B, hold.id, reason="case closed")
    again = life.propose_deletion(ADMIN_A, reason="again", today=TODAY)
    assert again.studies == [second]
    life.cancel_deletion(ADMIN_B, again.id)
    with pytest.raises(InvalidInputError, match="cancelled"):
        life.execute_deletion(ADMIN_B, again.id, today=TODAY)


def test_cli_and_rest(services: Services, settings: Settings, db_url: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(services, tmp_path, date_="19900105")
    settings_to_env(monkeypatch, settings, db_url)
    runner = CliRunner()
    out = runner.invoke(cli, ["retention", "rule-add", "--name", "MG 40", "--years", "40",
                              "--modality", "MG", "--by", "alice"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["retention", "review"])
    assert out.exit_code == 0 and study in out.output, out.output
    out = runner.invoke(cli, ["retention", "hold", "--study", study, "--reason", "case 7",
                              "--by", "alice"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["retention", "propose", "--reason", "over", "--by", "alice"])
    assert out.exit_code != 0 and "no study is due" in out.output
    client = TestClient(create_app(services))
    holds = client.get("/api/v1/lifecycle/holds")
    assert holds.status_code == 200 and holds.json()[0]["study_instance_uid"] == study
    released = client.post(f"/api/v1/lifecycle/holds/{holds.json()[0]['id']}/release",
                           json={"reason": "closed"})
    assert released.status_code == 200, released.text
    proposed = client.post("/api/v1/lifecycle/deletions", json={"reason": "over"})
    assert proposed.status_code == 201, proposed.text
    # the same operator may not execute what it proposed
    same = client.post(f"/api/v1/lifecycle/deletions/{proposed.json()['id']}/execute")
    assert same.status_code == 400
    out = runner.invoke(cli, ["retention", "execute", str(proposed.json()["id"]),
                              "--by", "bob"])
    assert out.exit_code == 0 and "deleted 1" in out.output, out.output
    assert client.get("/api/v1/lifecycle/review").json() == []
