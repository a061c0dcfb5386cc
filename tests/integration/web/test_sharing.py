"""Share links: a doctor without an account opens a study through a link (and PIN) in
another client, sees only that study, shows up in "who looked"; the resident revokes it
and the next opening is refused; wrong PINs are refused and lock the link."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import Portal
from tests.integration.web.test_portal import ORIGIN, browser, csrf_of, sign_in, world  # noqa: F401

from cloudfilm.interfaces.api.http import create_app


def _share(client: TestClient, study: str, *, hours: str = "24", pin: str = "") -> str:
    token = csrf_of(client, f"/portal/studies/{study}")
    made = client.post(f"/portal/studies/{study}/share",
                       data={"csrf_token": token, "hours": hours, "pin": pin}, headers=ORIGIN)
    assert made.status_code == 200, made.text[:400]
    assert "<svg" in made.text  # the QR code, rendered on the server
    found = re.search(r'value="(http://testserver/portal/s/[A-Za-z0-9_-]+)"', made.text)
    assert found
    return found.group(1).removeprefix("http://testserver")


def test_link_in_another_client_then_revoked(browser: TestClient,  # noqa: F811
                                             world: Portal) -> None:  # noqa: F811
    p = world.province
    sign_in(browser, world)
    for hours in ("0", "721", "x"):
        token = csrf_of(browser, "/portal")
        bad = browser.post(f"/portal/studies/{world.ct_study}/share",
                           data={"csrf_token": token, "hours": hours}, headers=ORIGIN)
        assert bad.status_code == 400
    # Someone else's study cannot be shared (R1 narrowed to themself; sb2 is R2's).
    token = csrf_of(browser, "/portal")
    theirs = browser.post(f"/portal/studies/{p.sb2}/share?for={p.r1}",
                          data={"csrf_token": token, "hours": "1"}, headers=ORIGIN)
    assert theirs.status_code == 403
    link = _share(browser, world.ct_study)
    with TestClient(create_app(p.services), follow_redirects=False) as doctor:
        page = doctor.get(link)
        assert page.status_code == 200 and 'id="frames"' in page.text
        assert "只能查看" in page.text and "/portal/access" not in page.text
        data = json.loads(page.text.split('id="frames">', 1)[1].split("</script>", 1)[0])
        assert data["base"].startswith(f"{link}/view/")
        base, sop = data["base"], data["items"][0][0]
        first = sop
        image = doctor.get(f"{base}/{sop}/1")
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
        # Another study's image through this link: the study UID comes from the link.
        series, sop = p.uids[p.sa1]
        assert doctor.get(f"{link}/frames/{series}/{sop}/1").status_code in (403, 404)
        # No session: the rest of the portal stays closed.
        assert doctor.get(f"/portal/studies/{world.ct_study}").status_code == 303
        # The resident sees the doctor in "who looked", then stops the link.
        log = browser.get("/portal/log")
        assert "持您分享链接的医生" in log.text and "打开了您的分享链接" in log.text
        mine = browser.get("/portal/shares")
        assert "已打开1次" in mine.text
        link_id = re.search(r'action="/portal/shares/(\d+)/revoke"', mine.text)
        assert link_id
        token = csrf_of(browser, "/portal")
        done = browser.post(f"/portal/shares/{link_id.group(1)}/revoke",
                            data={"csrf_token": token}, headers=ORIGIN)
        assert done.status_code == 303
        assert doctor.get(link).status_code == 404
        # Its frames stop at once in this process (in others within seconds).
        assert doctor.get(f"{base}/{first}/1").status_code == 401
    # A link that never existed.
    assert browser.get("/portal/s/" + "A" * 32).status_code == 404


def test_wrong_pin_is_refused_and_locks_the_link(browser: TestClient,  # noqa: F811
                                                 world: Portal) -> None:  # noqa: F811
    sign_in(browser, world)
    link = _share(browser, world.ct_study, hours="1", pin="4821")
    with TestClient(create_app(world.province.services), follow_redirects=False) as doctor:
        ask = doctor.get(link)
        assert ask.status_code == 200 and 'name="pin"' in ask.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', ask.text)
        assert csrf
        origin = {"origin": "http://testserver"}
        wrong = doctor.post(link, data={"csrf_token": csrf.group(1), "pin": "0000"},
                            headers=origin)
        assert wrong.status_code == 401 and "密码不对" in wrong.text
        right = doctor.post(link, data={"csrf_token": csrf.group(1), "pin": "4821"},
                            headers=origin)
        assert right.status_code == 303
        assert 'id="frames"' in doctor.get(link).text
    with TestClient(create_app(world.province.services), follow_redirects=False) as other:
        ask = other.get(link)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', ask.text)
        assert csrf
        codes = [other.post(link, data={"csrf_token": csrf.group(1), "pin": f"{n:04d}"},
                            headers={"origin": "http://testserver"}).status_code
                 for n in range(1, 6)]
        assert codes[:4] == [401] * 4 and codes[4] == 429
        # Locked even for the right PIN now.
        assert other.post(link, data={"csrf_token": csrf.group(1), "pin": "4821"},
                          headers={"origin": "http://testserver"}).status_code == 429


def test_sign_out_everywhere_ends_every_session(browser: TestClient,  # noqa: F811
                                                world: Portal) -> None:  # noqa: F811
    sign_in(browser, world)
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mobile"}) as second:
        sign_in(second, world)
        assert second.get("/portal").status_code == 200
        token = csrf_of(browser, "/portal")
        out = browser.post("/portal/signout", data={"csrf_token": token, "everywhere": "1"},
                           headers=ORIGIN)
        assert out.status_code == 303
        assert browser.get("/portal").status_code == 303
        assert second.get("/portal").status_code == 303  # the other phone is signed out


def test_elderly_mode_follows_the_account_to_another_phone(browser: TestClient,  # noqa: F811
                                                           world: Portal) -> None:  # noqa: F811
    sign_in(browser, world)
    token = csrf_of(browser, "/portal")
    big = browser.post("/portal/settings", data={"csrf_token": token, "elderly": "1",
                                                 "back": "/portal"}, headers=ORIGIN)
    assert big.status_code == 303
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mobile"}) as second:
        assert "elderly" not in second.get("/portal/signin").text.split("<body", 1)[1][:40]
        sign_in(second, world)
        assert '<body class=" elderly">' in second.get("/portal").text
        token = csrf_of(second, "/portal")
        second.post("/portal/settings", data={"csrf_token": token, "elderly": "0"},
                    headers=ORIGIN)
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mobile"}) as third:
        sign_in(third, world)
        assert "elderly" not in third.get("/portal").text.split("<body", 1)[1][:40]
