"""The phone viewer's frames: one policy decision and one audit record per viewing of a
series, then frames that carry a signed capability. Tries to get around it: another
session's cookie, no cookie, a tampered or expired capability, a signed-out session, a
revoked share link, an image of another series."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import PHONE1, Portal, build, latest_code

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR

ORIGIN = {"origin": "http://testserver"}
UA = {"user-agent": "Mozilla/5.0 (Linux; Android 10) Mobile"}


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    return build(province, tmp_path, slices=8)


def signed_in(world: Portal) -> TestClient:
    client = TestClient(create_app(world.province.services), follow_redirects=False,
                        headers=UA)
    client.__enter__()
    token = csrf(client, "/portal/signin")
    client.post("/portal/signin/code", data={"phone": PHONE1, "csrf_token": token},
                headers=ORIGIN)
    done = client.post("/portal/signin", data={
        "phone": PHONE1, "code": latest_code(world.province.services, PHONE1),
        "csrf_token": token}, headers=ORIGIN)
    assert done.status_code == 303
    return client


@pytest.fixture
def phone(world: Portal) -> Iterator[TestClient]:
    client = signed_in(world)
    yield client
    client.__exit__(None, None, None)


def csrf(client: TestClient, path: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


def frames_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="frames">(.*?)</script>', page, re.S)
    assert found, page[:500]
    data: dict[str, Any] = orjson.loads(found.group(1))
    return data


def views(world: Portal, series: str) -> list[dict[str, Any]]:
    p = world.province
    return [e for e in p.services.audit.events(LOCAL_OPERATOR, resident_id=p.r1, limit=500)
            if e["action"] in ("view", "render")]


def test_one_decision_per_viewing_then_cheap_frames(phone: TestClient, world: Portal) -> None:
    page = phone.get(f"/portal/studies/{world.ct_study}/series/{world.ct_series}/view")
    assert page.status_code == 200
    data = frames_of(page.text)
    assert len(data["items"]) == world.slices and data["window"]
    before = len(views(world, world.ct_series))
    for sop, frame in data["items"]:
        got = phone.get(f"{data['base']}/{sop}/{frame}?preset=lung&size=512")
        assert got.status_code == 200 and got.content[:2] == b"\xff\xd8"
    custom = phone.get(f"{data['base']}/{data['items'][0][0]}/1?preset=custom&ww=300&wc=40")
    assert custom.status_code == 200 and custom.content != phone.get(
        f"{data['base']}/{data['items'][0][0]}/1?preset=lung").content
    # Every frame above: no new decision or audit record (the page's one names R1).
    assert len(views(world, world.ct_series)) == before >= 1
    record = next(e for e in views(world, world.ct_series) if e["action"] == "view")
    assert record["resident_id"] == world.province.r1 and record["outcome"] == "allowed"


def test_capabilities_cannot_be_borrowed_forged_or_outlive_the_session(
        phone: TestClient, world: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    services = world.province.services
    monkeypatch.setattr(services.viewings, "_recheck", 0)
    data = frames_of(phone.get(
        f"/portal/studies/{world.ct_study}/series/{world.ct_series}/view").text)
    sop = data["items"][0][0]
    url = f"{data['base']}/{sop}/1"
    assert phone.get(url).status_code == 200
    with TestClient(create_app(services), follow_redirects=False, headers=UA) as stranger:
        assert stranger.get(url).status_code == 401  # no session: the URL alone opens nothing
        stranger.cookies.set("cloudfilm_session", "cfs_" + "B" * 43)
        assert stranger.get(url).status_code == 401
    other = signed_in(world)  # the same resident on another phone: its own session
    try:
        assert other.get(url).status_code == 401
    finally:
        other.__exit__(None, None, None)
    cap = data["base"].split("/view/")[1].split("/frames")[0]
    encoded, tag = cap.split(".")
    forged = phone.get(url.replace(cap, f"{encoded}.{'0' * len(tag)}"))
    assert forged.status_code == 401
    # A series of another study (R1's own, at HA) is not reachable with this capability.
    p = world.province
    _series, other_sop = p.uids[p.sa1]
    assert phone.get(f"{data['base']}/{other_sop}/1").status_code == 404
    # Expired: an hour later.
    import time as clock
    monkeypatch.setattr(services.viewings, "_clock", lambda: clock.time() + 3700)
    assert phone.get(url).status_code == 401
    monkeypatch.undo()
    monkeypatch.setattr(services.viewings, "_recheck", 0)
    # Signed out everywhere (another process would not have been told): frames stop.
    token = phone.cookies.get("cloudfilm_session")
    [account] = [a for a in services.accounts.list_accounts(by=LOCAL_OPERATOR)
                 if a.resident_id == p.r1]
    actor = services.accounts.actor_for_token(str(token))
    assert actor is not None and actor.account_id == account.id
    services.accounts.sign_out_everywhere(actor)
    assert phone.get(url).status_code == 401


def test_a_revoked_share_link_stops_its_frames(phone: TestClient, world: Portal,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    services = world.province.services
    monkeypatch.setattr(services.viewings, "_recheck", 0)
    shared = phone.post(f"/portal/studies/{world.ct_study}/share", data={
        "hours": "1", "csrf_token": csrf(phone, "/portal")}, headers=ORIGIN)
    link = re.search(r'value="(http[^"]+/portal/s/[^"]+)"', shared.text)
    assert link
    with TestClient(create_app(services), follow_redirects=False, headers=UA) as doctor:
        path = link.group(1).replace("http://testserver", "")
        data = frames_of(doctor.get(path).text)
        url = f"{data['base']}/{data['items'][0][0]}/1"
        assert doctor.get(url).status_code == 200
        # The capability is bound to the link: the resident's session cannot use it.
        assert phone.get(url.replace(path, "/portal/s/" + "x" * 32)).status_code == 401
        [mine] = services.shares.mine(services.accounts.actor_for_token(
            str(phone.cookies.get("cloudfilm_session"))))  # type: ignore[arg-type]
        services.shares.revoke(services.accounts.actor_for_token(  # type: ignore[arg-type]
            str(phone.cookies.get("cloudfilm_session"))), mine.id)
        assert doctor.get(url).status_code == 401
        assert doctor.get(path).status_code == 404


def test_an_ultrasound_clip_plays_frame_by_frame(phone: TestClient, world: Portal,
                                                 tmp_path: Path) -> None:
    """A multi-frame ultrasound object: the viewer starts cine, one item per frame, each
    frame served through the viewing (and a frame past the end is 404)."""
    import numpy as np
    from pydicom.uid import generate_uid
    from tests.factories import make_ct, to_bytes
    from tests.integration.access.conftest import NID1

    from cloudfilm.services.archive.ingest import IngestItem, Sender

    us_class = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds = make_ct(patient_id=NID1, patient_name="Wang^XiaoDong", size=32,
                 StudyDate="20250601", Modality="US", BodyPartExamined="ABDOMEN",
                 SOPClassUID=us_class, NumberOfFrames=6, BitsStored=8, HighBit=7,
                 BitsAllocated=8, RescaleIntercept=0)
    ds.file_meta.MediaStorageSOPClassUID = us_class
    del ds.WindowCenter, ds.WindowWidth
    clip = np.zeros((6, 32, 32), dtype=np.uint8)
    for n in range(6):
        clip[n, :, n * 5:n * 5 + 5] = 250  # a bar that moves frame by frame
    ds.PixelData = clip.tobytes()
    ds.SeriesInstanceUID = generate_uid()
    path = tmp_path / "us.dcm"
    path.write_bytes(to_bytes(ds))
    [stored] = world.province.services.ingest.ingest_files(
        [IngestItem(path)], sender=Sender("HB", "Hospital HB", "test"))
    assert not isinstance(stored, Exception), stored
    page = phone.get(f"/portal/studies/{ds.StudyInstanceUID}/series/"
                     f"{ds.SeriesInstanceUID}/view")
    assert page.status_code == 200 and 'id="play"' in page.text
    data = frames_of(page.text)
    assert data["cine"] is True and data["window"] == [256, 128]
    assert [f for _, f in data["items"]] == [1, 2, 3, 4, 5, 6]
    images = {phone.get(f"{data['base']}/{sop}/{f}").content for sop, f in data["items"]}
    assert len(images) == 6  # every frame differs: the bar moved
    sop = data["items"][0][0]
    assert phone.get(f"{data['base']}/{sop}/7").status_code == 404
