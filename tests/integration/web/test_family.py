"""Adding a family member from the portal: only with the other person's proof (a code sent to
their proven phone, or a hospital's one-time code for them), and never a stranger's record:
tries with a wrong name, without a code, with a guessed code, with another person's code,
with a sign-in code, and with another resident's activation code all fail, alike."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.integration.access.conftest import NID1, NID2, Province, province  # noqa: F401
from tests.integration.web.support import PHONE1, PHONE2, Portal, build, latest_code, register

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR

ORIGIN = {"origin": "http://testserver"}


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    portal = build(province, tmp_path, slices=3)
    # R2 (Zhao Lei, whom R1 already looks after) gets an account of their own: the asker.
    register(province.services, PHONE2, "Zhao Lei", NID2)
    return portal


@pytest.fixture
def r2_phone(world: Portal) -> Iterator[TestClient]:
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mozilla/5.0 (Linux; Android 10) Mobile"}) as client:
        token = csrf(client, "/portal/signin")
        client.post("/portal/signin/code", data={"phone": PHONE2, "csrf_token": token},
                    headers=ORIGIN)
        done = client.post("/portal/signin", data={
            "phone": PHONE2, "code": latest_code(world.province.services, PHONE2),
            "csrf_token": token}, headers=ORIGIN)
        assert done.status_code == 303, done.text
        yield client


def csrf(client: TestClient, path: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


def outbox_size(world: Portal, phone: str) -> int:
    return len(world.province.services.sms.outbox(phone=phone, limit=100))


def ask(client: TestClient, name: str, nid: str) -> str:
    page = client.post("/portal/family", data={"name": name, "national_id": nid,
                                               "csrf_token": csrf(client, "/portal/family")},
                       headers=ORIGIN)
    assert page.status_code == 200, page.text[:300]
    return page.text


def confirm(client: TestClient, name: str, nid: str, code: str) -> int:
    answer = client.post("/portal/family/confirm", data={
        "name": name, "national_id": nid, "code": code,
        "csrf_token": csrf(client, "/portal/family")}, headers=ORIGIN)
    return answer.status_code


def acts_for(world: Portal, rid: int) -> bool:
    p = world.province
    [account] = [a for a in p.services.accounts.list_accounts(by=LOCAL_OPERATOR)
                 if a.kind == "resident" and a.resident_id == p.r2]
    return rid in account.resident_ids


def test_add_a_family_member_with_the_code_sent_to_their_phone(
        r2_phone: TestClient, world: Portal) -> None:
    p = world.province
    assert not acts_for(world, p.r1)
    before = outbox_size(world, PHONE1)
    page = ask(r2_phone, "Wang XiaoDong", NID1)
    assert "验证码" in page and outbox_size(world, PHONE1) == before + 1
    [text] = [m.text for m in p.services.sms.outbox(phone=PHONE1, limit=1)]
    assert "Zhao Lei" in text or "Lei Zhao" in text  # the SMS names who asks
    assert confirm(r2_phone, "Wang XiaoDong", NID1, latest_code(p.services, PHONE1)) == 303
    assert acts_for(world, p.r1)
    # The family page lists them; the timeline offers the switcher.
    assert "Wang XiaoDong" in r2_phone.get("/portal/family").text \
        or "XiaoDong Wang" in r2_phone.get("/portal/family").text
    assert 'name="for"' in r2_phone.get("/portal").text
    # The person added sees the ask and the link in "who looked", as the asker's doing.
    # Acting for R1 now: R1's study, then R1 sees it labelled as a family member's doing.
    assert r2_phone.get(f"/portal/studies/{p.sa1}").status_code == 200
    r1_log = p.services.audit.access_log(p.resident(p.r1))
    assert any(e.kind == "resident" and "Zhao" in e.who for e in r1_log)
    events = p.services.audit.events(LOCAL_OPERATOR, resident_id=p.r1, limit=50)
    actions = [e["action"] for e in events]
    assert "family.ask" in actions and "identity.family.link" in actions


def test_a_stranger_cannot_attach_someone_elses_record(r2_phone: TestClient,
                                                      world: Portal) -> None:
    p = world.province
    before = outbox_size(world, PHONE1)
    # Wrong name for the ID: the same answer, but no code goes anywhere.
    wrong = ask(r2_phone, "Li Si", NID1)
    assert "如果姓名和身份证号" in wrong and outbox_size(world, PHONE1) == before
    # No code asked at all: guessing is refused.
    assert confirm(r2_phone, "Wang XiaoDong", NID1, "123456") == 400
    # A sign-in code texted to the other person's phone is not a family code.
    p.services.accounts.send_sign_in_code(PHONE1, requester="someone")
    assert confirm(r2_phone, "Wang XiaoDong", NID1, latest_code(p.services, PHONE1)) == 400
    # A real family code, but five wrong guesses burn it before the right one.
    ask(r2_phone, "Wang XiaoDong", NID1)
    right = latest_code(p.services, PHONE1)
    wrong_guess = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert confirm(r2_phone, "Wang XiaoDong", NID1, wrong_guess) == 400
    assert confirm(r2_phone, "Wang XiaoDong", NID1, right) == 400
    # The code is bound to the pair: another ID number with it links nobody.
    ask(r2_phone, "Wang XiaoDong", NID1)
    assert confirm(r2_phone, "Zhao Lei", NID2, latest_code(p.services, PHONE1)) == 400
    assert not acts_for(world, p.r1)
    refused = [e for e in p.services.audit.events(LOCAL_OPERATOR, resident_id=p.r1, limit=100)
               if e["action"] == "family.confirm"]
    assert refused and all(e["outcome"] == "failure" for e in refused)


def test_a_hospital_code_links_a_person_without_a_phone_only_to_that_person(
        r2_phone: TestClient, world: Portal) -> None:
    p = world.province
    hb = p.hospital("HB")
    own = p.services.accounts.issue_activation_code(NID2, by=hb)  # R2's own, not R1's
    assert confirm(r2_phone, "Wang XiaoDong", NID1, own.code) == 400
    theirs = p.services.accounts.issue_activation_code(NID1, by=hb)
    assert confirm(r2_phone, "Wang XiaoDong", NID1, theirs.code) == 303
    assert acts_for(world, p.r1)
    # Single use.
    assert confirm(r2_phone, "Wang XiaoDong", NID1, theirs.code) == 400


def test_asks_are_rate_limited_and_say_when_to_try_again(r2_phone: TestClient,
                                                         world: Portal) -> None:
    for _ in range(5):
        ask(r2_phone, "Nobody Here", NID1)
    answer = r2_phone.post("/portal/family", data={
        "name": "Nobody Here", "national_id": NID1,
        "csrf_token": csrf(r2_phone, "/portal/family")}, headers=ORIGIN)
    assert answer.status_code == 429 and "分钟后再试" in answer.text
