"""Issue 11, findings 1, 2, 6 and parts of 9, tried as an attacker would, through the REST
API with the local SMS outbox (what a phone would receive), on both databases.

- 1: a hospital redirects a patient's consent code to its own phone;
- 2: a stranger who knows a name (or its homophone) and an ID number opens the account;
- 6: a nameless study with another person's ID in OtherPatientIDsSequence is linked;
- 9: sign-in and consent codes share one SMS limit; grant answers tell who is indexed.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, text, update
from tests.conftest import settings_to_env
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.db.models import ActivationCode
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput

ADMIN = {"Authorization": "Bearer test-admin-token"}
_RNG = random.Random(11)
VICTIM_NID = national_id.generate(area_code="330106", birth_date=date(1985, 6, 7), sex="F",
                                  rng=_RNG)
OTHER_NID = national_id.generate(area_code="330106", birth_date=date(1970, 1, 2), sex="M",
                                 rng=_RNG)
VICTIM, HOMOPHONE = "赵洋玲", "招扬灵"  # both read ZHAO YANG LING
VICTIM_PHONE, ATTACKER_PHONE, OTHER_PHONE = "13811110001", "13922220002", "13733330003"


def _code(services: Services, phone: str) -> str:
    [latest, *_] = services.sms.outbox(phone=phone)
    found = re.search(r"\b(\d{6})\b", latest.text)
    assert found, latest.text
    return found.group(1)


def _register(client: Any, services: Services, phone: str, name: str, nid: str,
              activation_code: str = "") -> Any:
    assert client.post("/api/v1/auth/sms-code", json={"phone": phone}).status_code == 200
    return client.post("/api/v1/auth/resident/register", json={
        "phone": phone, "code": _code(services, phone), "name": name, "national_id": nid,
        "activation_code": activation_code})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit(db_url: str, action: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT actor_subject, outcome, resident_id, detail FROM audit_event "
                "WHERE action = :a ORDER BY seq"), {"a": action}))
    finally:
        engine.dispose()


@pytest.fixture
def province(services: Services, client: Any) -> dict[str, Any]:
    """HA recorded the victim (with her phone) and another resident (no phone); HB is the
    attacking hospital with a credential and a doctor; HA has an administrator."""
    # Cheap argon2 parameters for these tests' accounts (verification reads them from the
    # hash): eight default-cost hashes per test would dominate the run time.
    services.accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    for code in ("HA", "HB"):
        client.post("/api/v1/hospitals", headers=ADMIN, json={
            "code": code, "name": f"Hospital {code}", "level": "tertiary"})
    feeds = {code: _bearer(client.post(f"/api/v1/hospitals/{code}/credentials",
                                       headers=ADMIN, json={}).json()["token"])
             for code in ("HA", "HB")}
    r = client.post("/api/v1/registrations", headers=feeds["HA"], json={
        "patient_id": "HA-1", "national_id": VICTIM_NID, "name": VICTIM,
        "phone": VICTIM_PHONE})
    assert r.json()["state"] == "linked", r.text
    other = client.post("/api/v1/registrations", headers=feeds["HA"], json={
        "patient_id": "HA-2", "national_id": OTHER_NID, "name": "钱多多"}).json()
    doctors = {}
    for username, hospital, kind in (("dr.a", "HA", "doctor"), ("dr.b", "HB", "doctor"),
                                     ("admin.ha", "HA",
                                                                "hospital_admin"),
                                     ("admin.hb", "HB", "hospital_admin")):
        client.post("/api/v1/accounts", headers=ADMIN, json={
            "username": username, "password": "correct horse battery", "kind": kind,
            "display_name": username, "hospital_code": hospital})
        token = client.post("/api/v1/auth/doctor/sign-in", json={
            "username": username, "password": "correct horse battery"}).json()["token"]
        doctors[username] = _bearer(token)
    return {"victim": r.json()["resident_id"], "other": other["resident_id"], **feeds,
            **doctors}


# --- finding 1: no single hospital can steer consent -------------------------------------


def test_a_hospital_cannot_redirect_consent_codes(client: Any, services: Services,
                                                  province: dict[str, Any],
                                                  db_url: str) -> None:
    victim = _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID)
    assert victim.status_code == 201, victim.text
    # The attack as reported: no name, the victim's ID, the attacker's phone.
    r = client.post("/api/v1/registrations", headers=province["HB"], json={
        "patient_id": "EVIL-1", "national_id": VICTIM_NID, "phone": ATTACKER_PHONE})
    assert r.status_code == 200 and r.json()["state"] == "unmatched"
    assert r.json()["resident_id"] is None
    unmatched = client.get("/api/v1/residents/unmatched", headers=ADMIN).json()
    assert {"HB", "EVIL-1"} <= {u["hospital_code"] for u in unmatched} | \
        {u["patient_id"] for u in unmatched}
    # A homophone is a conflict, not a link.
    r = client.post("/api/v1/registrations", headers=province["HB"], json={
        "patient_id": "EVIL-2", "national_id": VICTIM_NID, "name": HOMOPHONE,
        "phone": ATTACKER_PHONE})
    assert r.json()["state"] == "conflict"
    # Even with the exact name, HB's phone is HB's record: it replaces nothing.
    r = client.post("/api/v1/registrations", headers=province["HB"], json={
        "patient_id": "EVIL-3", "national_id": VICTIM_NID, "name": VICTIM,
        "phone": ATTACKER_PHONE})
    assert r.json()["state"] == "linked"
    me = client.get("/api/v1/me", headers=_bearer(victim.json()["token"])).json()
    assert me["account"]["phone_masked"] == "138****0001"
    # HB's doctor asks for a grant by SMS: the code goes to the phone the victim proved.
    r = client.post("/api/v1/grants", headers=province["dr.b"], json={
        "national_id": VICTIM_NID, "purpose": "second opinion", "mode": "sms"})
    assert r.status_code == 201, r.text
    assert services.sms.outbox(phone=ATTACKER_PHONE) == []
    [message] = services.sms.outbox(phone=VICTIM_PHONE)[:1]
    assert "dr.b" in message.text and "Hospital HB" in message.text
    # Every phone a feed recorded is in the chained audit, and the chain holds.
    recorded = _audit(db_url, "identity.contact.phone")
    assert len(recorded) == 4 and {r.actor_subject for r in recorded} == {"HA", "HB"}
    assert services.audit.verify().ok
    # Links are in the chained audit too (finding 6: not only in identity_event).
    assert any(r.resident_id == province["victim"] for r in _audit(db_url, "identity.link"))


def test_a_resident_without_a_proven_phone_gets_no_code_anywhere(
        client: Any, services: Services, province: dict[str, Any]) -> None:
    # The victim has no account: HA's feed phone must not receive consent codes either.
    for mode in ("sms", "portal"):
        r = client.post("/api/v1/grants", headers=province["dr.b"], json={
            "national_id": VICTIM_NID, "purpose": "second opinion", "mode": mode})
        assert r.status_code == 400 and r.json()["error"] == "grant-undeliverable"
    assert services.sms.outbox(phone=VICTIM_PHONE) == []


def test_every_grant_is_told_on_the_proven_phone(client: Any, services: Services,
                                                 province: dict[str, Any]) -> None:
    assert _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID).status_code == 201
    before = len(services.sms.outbox(phone=VICTIM_PHONE))
    ref = {"national_id": VICTIM_NID}
    assert client.post("/api/v1/grants", headers=province["dr.b"], json={
        **ref, "purpose": "review", "mode": "portal"}).status_code == 201
    assert client.post("/api/v1/grants/in-person", headers=province["dr.b"], json={
        **ref, "purpose": "review", "id_card_number": VICTIM_NID,
        "witness_name": "Nurse"}).status_code == 201
    assert client.post("/api/v1/grants/break-glass", headers=province["dr.b"], json={
        **ref, "reason": "unconscious, prior CT needed"}).status_code == 201
    assert client.post("/api/v1/grants", headers=province["dr.b"], json={
        **ref, "purpose": "review", "mode": "sms"}).status_code == 201
    assert len(services.sms.outbox(phone=VICTIM_PHONE)) == before + 4


# --- finding 2: real-name binding a stranger cannot pass ---------------------------------


def test_a_stranger_cannot_open_the_account(client: Any, services: Services,
                                            province: dict[str, Any], db_url: str) -> None:
    # The reported attack: a homophone and the attacker's own phone.
    r = _register(client, services, ATTACKER_PHONE, HOMOPHONE, VICTIM_NID)
    assert r.status_code == 400 and r.json()["error"] == "registration-refused"
    # Even the exact name is not enough without a second factor.
    r2 = _register(client, services, ATTACKER_PHONE, VICTIM, VICTIM_NID)
    # An ID that is not indexed gets the very same answer.
    r3 = _register(client, services, ATTACKER_PHONE, VICTIM,
                   national_id.generate(area_code="110101", birth_date=date(1990, 1, 1),
                                        sex="F", rng=_RNG))
    assert r.json() == r2.json() == r3.json()
    # Each refused try is audited, naming the resident when the ID was indexed.
    failures = [a for a in _audit(db_url, "account.register") if a.outcome == "failure"]
    assert [a.resident_id for a in failures] == [province["victim"], province["victim"], None]
    # The real patient, with the phone her hospital recorded, registers.
    r = _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID)
    assert r.status_code == 201, r.text
    assert orjson.loads(_audit(db_url, "account.register")[-1].detail)["factor"] == \
        "hospital_phone"


def test_activation_codes_are_single_use_expiring_and_hashed(
        client: Any, services: Services, province: dict[str, Any], db_url: str) -> None:
    # Another hospital cannot issue a code for HA's patient.
    r = client.post("/api/v1/activation-codes", headers=province["HB"],
                    json={"patient_id": "HA-2", "hospital_code": "HA"})
    assert r.status_code == 403
    assert client.post("/api/v1/activation-codes", headers=province["HB"],
                       json={"patient_id": "HA-2"}).status_code == 404
    # Nor can a doctor; HA's feed (or HA's administrator) can.
    assert client.post("/api/v1/activation-codes", headers=province["dr.b"],
                       json={"patient_id": "HA-2"}).status_code == 403
    r = client.post("/api/v1/activation-codes", headers=province["HA"],
                    json={"patient_id": "HA-2"})
    assert r.status_code == 201, r.text
    code = r.json()["activation_code"]
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM activation_code")))
    engine.dispose()
    assert code.replace("-", "") not in dump
    # Wrong resident: a code for HA-2 does not open the victim's account.
    r = _register(client, services, ATTACKER_PHONE, VICTIM, VICTIM_NID, code)
    assert r.status_code == 400
    r = _register(client, services, OTHER_PHONE, "钱多多", OTHER_NID, code.lower())
    assert r.status_code == 201, r.text
    # Single use.
    client.post("/api/v1/residents/{}/account-reset".format(province["other"]),
                headers=ADMIN, json={"id_card_number": OTHER_NID})
    r = _register(client, services, OTHER_PHONE, "钱多多", OTHER_NID, code)
    assert r.status_code == 400
    # Expiring.
    code = client.post("/api/v1/activation-codes", headers=province["admin.ha"],
                       json={"patient_id": "HA-2"}).json()["activation_code"]
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(update(ActivationCode).values(
            expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    engine.dispose()
    assert _register(client, services, OTHER_PHONE, "钱多多", OTHER_NID,
                     code).status_code == 400


def test_already_registered_is_reset_in_person(client: Any, services: Services,
                                               province: dict[str, Any],
                                               db_url: str) -> None:
    # Suppose someone holds the victim's account (here: the victim's old phone).
    old = _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID)
    assert old.status_code == 201
    path = f"/api/v1/residents/{province['victim']}/account-reset"
    # HB has no record of her: its administrator cannot reset; a doctor cannot either.
    assert client.post(path, headers=province["admin.hb"],
                       json={"id_card_number": VICTIM_NID}).status_code == 403
    assert client.post(path, headers=province["dr.b"],
                       json={"id_card_number": VICTIM_NID}).status_code == 403
    # The ID card number typed must be hers.
    r = client.post(path, headers=province["admin.ha"], json={"id_card_number": OTHER_NID})
    assert r.status_code == 403
    r = client.post(path, headers=province["admin.ha"], json={"id_card_number": VICTIM_NID})
    assert r.status_code == 200, r.text
    code = r.json()["activation_code"]
    # The old session ends, the old phone is told, the reset is in the chained audit.
    assert client.get("/api/v1/me", headers=_bearer(old.json()["token"])).status_code == 401
    assert "ID card check" in services.sms.outbox(phone=VICTIM_PHONE)[0].text
    outcomes = [a.outcome for a in _audit(db_url, "account.reset")]
    assert outcomes == ["failure", "failure", "success"]  # HB's administrator, wrong card
    # She registers again with her new phone and the code handed over at the desk.
    r = _register(client, services, ATTACKER_PHONE.replace("139", "136"), VICTIM,
                  VICTIM_NID, code)
    assert r.status_code == 201, r.text
    assert services.audit.verify().ok


# --- finding 6: linking at ingest needs the same evidence --------------------------------


def _ingest(services: Services, folder: Path, ds: Dataset) -> None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    [result] = services.ingest.ingest_files([IngestItem(path)],
                                            sender=Sender("HC", "Hospital HC", "test"))
    assert not isinstance(result, Exception), result


def _with_other_id(nid: str, **attrs: Any) -> Dataset:
    ds = make_ct(**attrs)
    item = Dataset()
    item.PatientID = nid
    item.IssuerOfPatientID = "CN-RID"
    ds.OtherPatientIDsSequence = [item]
    return ds


def test_a_nameless_study_is_not_attached_to_anyone(services: Services,
                                                    province: dict[str, Any], tmp_path: Path,
                                                    db_url: str) -> None:
    services.hospitals.register(HospitalInput(
        code="HC", name="Hospital HC", level="secondary",
        national_id_source="other_patient_ids", national_id_issuer="CN-RID"))
    _ingest(services, tmp_path, _with_other_id(VICTIM_NID, patient_id="X-1",
                                               patient_name="", PatientSex="F",
                                               PatientBirthDate="19850607"))
    _ingest(services, tmp_path, _with_other_id(VICTIM_NID, patient_id="X-2",
                                               patient_name=HOMOPHONE, PatientSex="F",
                                               PatientBirthDate="19850607"))
    _ingest(services, tmp_path, _with_other_id(VICTIM_NID, patient_id="X-3",
                                               patient_name="Zhao^Yangling=赵^洋玲",
                                               PatientSex="F", PatientBirthDate="19850607"))
    view = services.residents.get(province["victim"])
    states = {link.patient_id: link.state for link in view.links if link.hospital_code == "HC"}
    assert states == {"X-2": "candidate", "X-3": "linked"}
    assert "X-1" in {u["patient_id"] for u in services.residents.unmatched()}
    assert "X-2" in {c["patient_id"] for c in services.residents.conflicts()}
    # The ingest link and the conflict are in the chained audit.
    assert any(r.resident_id == province["victim"] for r in _audit(db_url, "identity.link"))
    assert _audit(db_url, "identity.link.conflict")
    assert services.audit.verify().ok


# --- finding 9: separate SMS limits, uniform grant answers -------------------------------


def test_grant_requests_cannot_block_sign_in_codes(client: Any, services: Services,
                                                  province: dict[str, Any]) -> None:
    assert _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID).status_code == 201
    statuses = [client.post("/api/v1/grants", headers=province["dr.b"], json={
        "national_id": VICTIM_NID, "purpose": "spam", "mode": "sms"}).status_code
        for _ in range(6)]
    assert statuses == [201, 201, 201, 201, 201, 429]
    # The resident can still get a sign-in code (one of five in the hour is spent).
    assert client.post("/api/v1/auth/sms-code", json={"phone": VICTIM_PHONE}).status_code == 200


def test_grant_answers_tell_nothing_about_people_or_ids(client: Any, services: Services,
                                                       province: dict[str, Any]) -> None:
    unknown_nid = national_id.generate(area_code="110101", birth_date=date(1991, 2, 3),
                                       sex="M", rng=_RNG)
    answers = set()
    for ref in ({"national_id": unknown_nid}, {"national_id": OTHER_NID},
                {"resident_id": 987654}, {"resident_id": province["other"]}):
        for mode in ("sms", "portal"):
            r = client.post("/api/v1/grants", headers=province["dr.b"],
                            json={**ref, "purpose": "probe", "mode": mode})
            answers.add((r.status_code, r.text))
    assert len(answers) == 1, answers
    # In person: an unknown resident and a wrong card get one answer.
    answers = set()
    for ref in ({"resident_id": 987654}, {"resident_id": province["other"]}):
        r = client.post("/api/v1/grants/in-person", headers=province["dr.b"], json={
            **ref, "purpose": "probe", "id_card_number": unknown_nid, "witness_name": "N"})
        answers.add((r.status_code, r.text))
    assert len(answers) == 1, answers
    # Grant ids: someone else's and an unknown one answer alike.
    assert _register(client, services, VICTIM_PHONE, VICTIM, VICTIM_NID).status_code == 201
    grant = client.post("/api/v1/grants", headers=province["dr.b"], json={
        "national_id": VICTIM_NID, "purpose": "review", "mode": "sms"}).json()["id"]
    for action, who in (("sms-confirm", "dr.a"), ("revoke", "dr.a"), ("review", "admin.ha")):
        body = {"code": "123456", "decision": "accepted"}
        mine = client.post(f"/api/v1/grants/{grant}/{action}", headers=province[who],
                           json=body)
        none = client.post(f"/api/v1/grants/{grant + 1000}/{action}",
                           headers=province[who], json=body)
        assert mine.status_code == 404
        assert (mine.status_code, mine.json()["message"].replace(str(grant), "N")) == \
            (none.status_code, none.json()["message"].replace(str(grant + 1000), "N")), action


# --- the desk's CLI: activation codes and the in-person reset ----------------------------


def test_cli_issues_activation_codes_and_resets_accounts(
        client: Any, services: Services, province: dict[str, Any], settings: Any,
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cloudfilm.cli.main import cli

    settings_to_env(monkeypatch, settings, db_url)
    runner = CliRunner()
    result = runner.invoke(cli, ["hospitals", "activation-code", "HA", "HA-2"])
    assert result.exit_code == 0, result.output
    code = re.search(r"activation code (\S+)", result.output)
    assert code, result.output
    r = _register(client, services, OTHER_PHONE, "钱多多", OTHER_NID, code.group(1))
    assert r.status_code == 201, r.text
    result = runner.invoke(cli, ["residents", "reset-account", str(province["other"]),
                                 "--id-card-number", VICTIM_NID])
    assert result.exit_code == 1 and "does not match" in result.output
    result = runner.invoke(cli, ["residents", "reset-account", str(province["other"])],
                           input=f"{OTHER_NID}\n")
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/me", headers=_bearer(r.json()["token"])).status_code == 401
    assert "ID card check" in services.sms.outbox(phone=OTHER_PHONE)[0].text


# --- the identity-verification provider port ---------------------------------------------


def test_identity_provider_adapters() -> None:
    import httpx

    from cloudfilm.infrastructure.realname.http import (
        HttpIdentityVerifier,
        VerificationUnavailableError,
        sign,
    )
    from cloudfilm.services.access.proofing import LocalIdentityVerifier, ProviderVerifier

    local = LocalIdentityVerifier([f"{VICTIM_NID}:{VICTIM_PHONE}"])
    assert local.verify(name=VICTIM, national_id=VICTIM_NID, phone=VICTIM_PHONE)
    assert not local.verify(name=VICTIM, national_id=VICTIM_NID, phone=ATTACKER_PHONE)
    assert not local.verify(name="", national_id=VICTIM_NID, phone=VICTIM_PHONE)

    seen: list[httpx.Request] = []
    answers = iter([httpx.Response(200, json={"match": True}),
                    httpx.Response(200, json={"match": False}),
                    httpx.Response(503), httpx.Response(200, content=b"<html>"),
                    httpx.Response(200, json={"match": "yes"})])

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = request.headers
        expected = sign(b"s3cret", headers["X-Timestamp"], headers["X-Nonce"],
                        request.content)
        assert headers["X-Signature"] == expected and headers["X-Access-Key"] == "key"
        return next(answers)

    adapter = HttpIdentityVerifier("https://realname.invalid/verify", access_key="key",
                                   secret="s3cret", transport=httpx.MockTransport(provider))
    ask = {"name": VICTIM, "national_id": VICTIM_NID, "phone": VICTIM_PHONE}
    assert adapter.verify(**ask) is True
    assert orjson.loads(seen[0].content) == {"name": VICTIM, "id_number": VICTIM_NID,
                                             "phone": VICTIM_PHONE}
    assert adapter.verify(**ask) is False
    for _ in range(3):  # 503, not JSON, no boolean: unavailable, never a match
        with pytest.raises(VerificationUnavailableError):
            adapter.verify(**ask)
    wrapped = ProviderVerifier(HttpIdentityVerifier(
        "https://realname.invalid/verify", access_key="key", secret="s3cret",
        transport=httpx.MockTransport(lambda request: httpx.Response(500))))
    assert wrapped.verify(**ask) is False


def test_registration_with_the_identity_provider(client: Any, services: Services,
                                                 province: dict[str, Any],
                                                 db_url: str) -> None:
    from cloudfilm.services.access.proofing import LocalIdentityVerifier

    new_phone = "13544440004"
    r = _register(client, services, new_phone, "钱多多", OTHER_NID)
    assert r.status_code == 400  # no second factor yet
    services.accounts._verifier = LocalIdentityVerifier([f"{OTHER_NID}:{new_phone}"])
    r = _register(client, services, new_phone, HOMOPHONE, OTHER_NID)
    assert r.status_code == 400  # the provider does not excuse a wrong name
    r = _register(client, services, new_phone, "钱多多", OTHER_NID)
    assert r.status_code == 201, r.text
    assert orjson.loads(_audit(db_url, "account.register")[-1].detail)["factor"] == \
        "identity_provider"
