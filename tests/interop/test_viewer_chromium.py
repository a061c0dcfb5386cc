"""The workstation's diagnostic viewer (issue 14) in Debian's headless Chromium at 1440x900,
WebGL through SwiftShader: a doctor of a third hospital, holding the patient's grant,
opens a current CT (one hospital) beside a prior (another). Checked: the render event, a
canvas that is not blank, the brightness at a phantom marker that moves with the slice,
the slice index after scrolling, a window preset that changes the pixels, a Length across
two phantom dots 100 mm apart, the prior's scroll following the current's, a JPEG-LS series
(the WebAssembly codec) drawn, the grant revoked while the viewer is open and the next
frame refused with a message, axe-core, every .wasm answered 200. Screenshots under
tests/artifacts/viewer/ (git-ignored).

The doctor's session and the grant are made through the services (the sign-in and consent
pages are tested with the workstation)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid
from sqlalchemy import create_engine, text
from tests.factories import make_ct, to_bytes
from tests.integration.web.support import PHONE1, register
from tests.interop.chromium import (  # noqa: F401
    DESK,
    PHONE,
    base_of,
    check_axe,
    open_page,
    page_of,
    portal_sign_in,
    webgl_browser,
)
from tests.interop.chromium import shot as screenshot
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

from cloudfilm.interfaces.web.assets import DIST_DIR
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.access.consent import GrantRequest, InPersonEvidence
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

SLICES, SIZE = 30, 256
DOT_A, DOT_B = (78, 200), (178, 200)  # (column, row): 100 px apart at 1 mm a pixel


def marker(index: int) -> tuple[int, int]:
    """(column, row) of the bright marker's centre on the index-th slice shown (0 = head)."""
    return 40 + 5 * index, 64


def phantom(study: str, series: str, number: int, index: int, *, nid: str,
            frame: str) -> Dataset:
    """A 256x256 CT slice, 1 mm pixels: air, a water disc, a bone marker that moves with
    the slice, and two bone dots 100 mm apart."""
    ds = make_ct(patient_id=nid, patient_name="Wang^XiaoDong", study_uid=study,
                 series_uid=series, instance_number=index + 1, size=SIZE)
    ds.SeriesNumber = number
    ds.SeriesDescription = f"Phantom {number}"
    ds.BodyPartExamined = "CHEST"
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-128.0, -128.0, 100.0 - 2.0 * index]  # head first
    ds.FrameOfReferenceUID = frame
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    hu = np.full((SIZE, SIZE), -1000, dtype=np.int16)
    hu[(xx - 128) ** 2 + (yy - 128) ** 2 < 110 ** 2] = 0
    mc, mr = marker(index)
    hu[mr - 6: mr + 6, mc - 6: mc + 6] = 1000
    for c, r in (DOT_A, DOT_B):
        hu[r - 1: r + 2, c - 1: c + 2] = 1000
    ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    return ds


def multi_frame(ds: Dataset, *, nid: str, frame: str) -> None:
    """Make ``ds`` one multi-frame object of 6 frames (the marker moves frame to frame), as
    an ultrasound clip or a secondary capture would be."""
    frames = [phantom(ds.StudyInstanceUID, ds.SeriesInstanceUID, 6, i, nid=nid, frame=frame)
              for i in range(6)]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
        "1.2.840.10008.5.1.4.1.1.7.3")  # Multi-frame Grayscale Word Secondary Capture
    ds.NumberOfFrames = 6
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100.0
    ds.PixelData = b"".join(f.PixelData for f in frames)


@dataclass(frozen=True)
class World:
    services: Services
    token: str
    doctor: Actor
    grant_id: int
    study: str
    series: tuple[str, ...]  # uncompressed, JPEG-LS, uncompressed (opened last), RLE, J2K
    prior: str
    first_sop: str  # an instance of the first series
    nid: str


@pytest.fixture
def world(services: Services, tmp_path: Path) -> World:
    nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                               rng=random.Random(14))
    for code in ("HA", "HB", "HC"):
        services.hospitals.register(HospitalInput(
            code=code, name=f"示范医院{code}", level="tertiary", grade="A",
            national_id_source="patient_id"))
    study, prior = generate_uid(), generate_uid()
    series = tuple(generate_uid() for _ in range(6))
    plan = [("HA", study, series[0], 1, SLICES), ("HA", study, series[1], 2, 8),
            ("HA", study, series[2], 3, 8), ("HA", study, series[3], 4, 4),
            ("HA", study, series[4], 5, 4), ("HA", study, series[5], 6, 1),
            ("HB", prior, generate_uid(), 1, SLICES)]
    syntax = {2: JPEGLSLossless, 4: RLELossless, 5: JPEG2000Lossless}
    sops: list[str] = []
    for code, st, se, number, count in plan:
        frame = generate_uid()
        items = []
        for i in range(count):
            ds = phantom(st, se, number, i, nid=nid, frame=frame)
            if code == "HA" and number in syntax:
                ds.compress(syntax[number])
            if number == 6:
                multi_frame(ds, nid=nid, frame=frame)
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(to_bytes(ds))
            items.append(IngestItem(path))
            sops.append(str(ds.SOPInstanceUID))
        results = services.ingest.ingest_files(items, sender=Sender(code, code, "test"))
        assert not [r for r in results if isinstance(r, Exception)]
    services.accounts.create_account(NewAccount(
        kind="doctor", username="dr.viewer", password="correct horse battery",
        display_name="李医生", hospital_code="HC", department="放射科"), by=LOCAL_OPERATOR)
    signed = services.accounts.sign_in_password("dr.viewer", "correct horse battery",
                                                requester="test")
    doctor = services.accounts.actor_for_token(signed.token)
    assert doctor is not None
    grant = services.consent.in_person(doctor, GrantRequest(purpose="会诊", national_id=nid),
                                       InPersonEvidence(id_card_number=nid, witness_name="护士张"))
    register(services, PHONE1, "Wang XiaoDong", nid, hospital="HA")  # the portal account
    return World(services, signed.token, doctor, grant.id, study, series, prior, sops[0], nid)


def shot(page: Page, name: str) -> Image.Image:
    return screenshot(page, "viewer", name)


def state(page: Page) -> dict[str, Any]:
    return page.evaluate("window.cloudfilmViewer.state()")  # type: ignore[no-any-return]


def at(page: Page, cell: int, column: float, row: float) -> tuple[float, float]:
    xy = page.evaluate(f"window.cloudfilmViewer.pixelToPage({cell}, {column}, {row})")
    return float(xy[0]), float(xy[1])


def brightness(img: Image.Image, xy: tuple[float, float]) -> float:
    x, y = round(xy[0]), round(xy[1])
    return float(np.asarray(img.crop((x - 2, y - 2, x + 3, y + 3))).mean())


def test_viewer_reads_compares_measures_and_stops_when_the_grant_ends(
        world: World, webgl_browser: Browser, server_url: str,  # noqa: F811
        db_url: str) -> None:
    base = base_of(server_url)
    context, page, errors = open_page(webgl_browser, base, token=world.token, **DESK)
    wasm: dict[str, int] = {}
    page.on("response", lambda r: wasm.__setitem__(r.url, r.status)
            if r.url.endswith(".wasm") else None)

    # Without a session: the sign-in page of the workstation, coming back here.
    anonymous = httpx.get(f"{base}/workstation/viewer?study={world.study}",
                          follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/workstation/signin?next=")

    page.goto(f"{base}/workstation/viewer?study={world.study}&prior={world.prior}")
    page.wait_for_function("() => document.body.dataset.rendered === 'true'", timeout=20000)
    # The first slice (uncompressed) was drawn before Cornerstone loaded (boot.ts), and
    # that drawing made way for Cornerstone's viewport once it had rendered.
    assert page.evaluate("() => document.body.dataset.preview") == "true"
    assert page.locator("canvas.boot-preview").count() == 0
    try:
        page.wait_for_function("() => window.cloudfilmViewer.state().cells.slice(0, 2)"
                               ".every(c => c.count && c.loaded === c.count)", timeout=20000)
    except Exception:
        raise AssertionError((state(page), errors)) from None
    first = state(page)
    assert first["layout"] == "1x2" and not first["cells"][1]["hidden"]
    assert first["cells"][0]["count"] == SLICES and first["cells"][1]["count"] == SLICES
    img = shot(page, "01-current-and-prior")
    box = page.locator(".cell").first.bounding_box()
    assert box is not None
    canvas = np.asarray(img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                                  int(box["y"] + box["height"]))))
    assert (canvas > 8).mean() > 0.10

    # Scroll the current to slice 20 (keys and wheel); the prior follows by index (its frame
    # of reference differs), keeping the offset it was put beside with.
    start = first["cells"][0]["index"]
    prior_start = first["cells"][1]["index"]
    page.locator(".cell .viewport").first.click(position={"x": 5, "y": 5})
    for _ in range(20 - start - 2):
        page.keyboard.press("ArrowDown")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 100)
    page.mouse.wheel(0, 100)
    try:
        page.wait_for_function("() => window.cloudfilmViewer.state().cells[0].index === 20",
                               timeout=5000)
        page.wait_for_function("() => window.cloudfilmViewer.state().cells[1].index === "
                               f"{prior_start + 20 - start}", timeout=5000)
    except Exception:
        raise AssertionError((start, prior_start, state(page), errors)) from None
    # One wheel event carrying three notches (what Chromium makes of a fast spin while the
    # page is busy) moves three slices, not one; and back.
    for delta, want in ((300, 23), (-300, 20)):
        page.mouse.wheel(0, delta)
        page.wait_for_function("(n) => window.cloudfilmViewer.state().cells[0].index === n",
                               arg=want, timeout=5000)
    page.wait_for_timeout(300)
    img = shot(page, "02-scrolled-to-20")
    assert "20/30" in page.locator(".cell .ov-bl").first.inner_text()
    here, elsewhere = marker(19), marker(5)
    assert brightness(img, at(page, 0, *here)) > 200  # the bone marker of slice 20
    assert brightness(img, at(page, 0, *elsewhere)) < 160  # where slice 6 had it

    # A window preset changes the pixels.
    before = np.asarray(img)
    page.get_by_role("button", name="肺窗").click()
    page.wait_for_function("() => window.cloudfilmViewer.state().cells[0].voi.upper > 100")
    page.wait_for_timeout(200)
    assert not np.array_equal(np.asarray(shot(page, "03-lung-window")), before)

    # A Length across the two dots, 100 mm apart.
    page.get_by_role("button", name="长度").click()
    a, b = at(page, 0, *DOT_A), at(page, 0, *DOT_B)
    page.mouse.move(*a)
    page.mouse.down()
    # Past the double-click window (400 ms) Cornerstone takes the press as a press, where it
    # happened, and starts the annotation there; wait for that rather than for the clock (a
    # busy page ran the timer late and took the first move's point as the start: 90 mm).
    page.wait_for_timeout(500)
    page.wait_for_function("() => window.cloudfilmViewer.measurements().some("
                           "m => m.tool === 'Length')", timeout=5000)
    for k in range(1, 11):  # a hand's drag, not a jump
        page.mouse.move(a[0] + (b[0] - a[0]) * k / 10, a[1] + (b[1] - a[1]) * k / 10)
        page.wait_for_timeout(30)
    page.mouse.up()
    # Cornerstone's LengthTool works its stats out throttled (100 ms, trailing), so a busy
    # page can show a mid-drag figure (90 mm at the ninth step) for a moment: wait for the
    # trailing one, the figure the doctor reads once the hand stops.
    try:
        page.wait_for_function("() => window.cloudfilmViewer.measurements().some("
                               "m => m.tool === 'Length' && m.stats "
                               "&& Math.abs(m.stats.length - 100) <= 1)", timeout=5000)
    except Exception:
        shot(page, "04-length-failed")
        raise AssertionError((a, b, page.evaluate("window.cloudfilmViewer.measurements()"),
                              errors)) from None
    lengths = [m["stats"]["length"] for m in page.evaluate(
        "window.cloudfilmViewer.measurements()") if m["tool"] == "Length"]
    shot(page, "04-length")
    assert len(lengths) == 1 and abs(lengths[0] - 100.0) <= 1.0, lengths

    # JPEG-LS, RLE and JPEG 2000 series play (WebAssembly codecs; each .wasm answered 200).
    for uid, name in ((world.series[1], "jpeg-ls"), (world.series[3], "rle"),
                      (world.series[4], "jpeg2000")):
        page.locator(f".thumb[data-series='{uid}']").click()
        page.wait_for_function(f"() => {{ const c = window.cloudfilmViewer.state().cells[0]; "
                               f"return c.series === '{uid}' && c.loaded === c.count; }}")
        page.wait_for_timeout(300)
        img = shot(page, f"05-{name}")
        shown = state(page)["cells"][0]["index"]
        assert brightness(img, at(page, 0, *marker(shown - 1))) > 200, name
    assert len(wasm) >= 2 and all(status == 200 for status in wasm.values()), wasm

    # A multi-frame object: one image a frame, and cine plays it.
    page.locator(f".thumb[data-series='{world.series[5]}']").click()
    page.wait_for_function(f"() => {{ const c = window.cloudfilmViewer.state().cells[0]; "
                           f"return c.series === '{world.series[5]}' && c.count === 6 "
                           "&& c.loaded === 6; }")
    shown = state(page)["cells"][0]["index"]
    page.keyboard.press("c")
    page.wait_for_function(f"() => window.cloudfilmViewer.state().cells[0].index !== {shown}")
    page.keyboard.press("c")
    shot(page, "05-multi-frame")

    check_axe(page, base)
    page.keyboard.press("?")
    page.get_by_role("heading", name="键盘快捷键").wait_for()
    shot(page, "06-shortcuts")
    page.keyboard.press("Escape")

    assert errors == [], errors

    # The patient, signed in to the portal on a phone (a second browser context), withdraws
    # the doctor's grant while the viewer is open: the next frame is refused, and the viewer
    # says why.
    with page_of(webgl_browser, base, **PHONE) as (phone, phone_errors):
        portal_sign_in(phone, base, world.services, PHONE1)
        phone.goto(f"{base}/portal/access")
        row = phone.locator("li, tr, article", has_text="李医生").filter(
            has=phone.get_by_role("button", name="撤销授权")).last
        row.get_by_role("button", name="撤销授权").click()
        phone.wait_for_url("**/portal/access?done=revoke")
        screenshot(phone, "viewer", "07a-patient-revokes")
        assert phone_errors == [], phone_errors
    page.locator(f".thumb[data-series='{world.series[2]}']").click()
    page.wait_for_function("() => document.body.dataset.refused === '403'")
    message = page.locator("#viewer-message")
    assert message.is_visible() and "授权" in message.inner_text()
    shot(page, "07-access-ended")
    assert all("403" in e or "XMLHttpRequest" in e for e in errors), errors
    frame = page.evaluate("() => window.cloudfilmViewer.state().cells[0].series")
    assert frame == world.series[2]
    # ... and so is any other frame of the study, as the browser would ask for it.
    url = (f"/dicomweb/studies/{world.study}/series/{world.series[0]}/instances/"
           f"{world.first_sop}/frames/1")
    assert page.evaluate(f"async () => (await fetch('{url}')).status") == 403

    # Every .wasm of the build is served (the codecs a study of another syntax would load).
    for path in DIST_DIR.glob("assets/*.wasm"):
        r = httpx.get(f"{base}/static/dist/assets/{path.name}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/wasm"

    # A new grant; the viewer opened again; the grant runs out while it is open (its end
    # moved to now, as the clock would): the next frame is refused, and the viewer says so.
    grant = world.services.consent.in_person(
        world.doctor, GrantRequest(purpose="会诊", national_id=world.nid),
        InPersonEvidence(id_card_number=world.nid, witness_name="护士张"))
    errors.clear()
    page.goto(f"{base}/workstation/viewer?study={world.study}")
    page.wait_for_function("() => document.body.dataset.rendered === 'true'", timeout=20000)
    assert page.locator("#viewer-message").is_hidden()
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE access_grant SET expires_at = :now WHERE id = :id"),
                         {"now": datetime.now(UTC).replace(tzinfo=None), "id": grant.id})
    finally:
        engine.dispose()
    page.locator(f".thumb[data-series='{world.series[3]}']").click()
    page.wait_for_function("() => document.body.dataset.refused === '403'")
    message = page.locator("#viewer-message")
    assert message.is_visible() and "到期" in message.inner_text(), message.inner_text()
    shot(page, "08-grant-expired")
    context.close()


# The grey values of a canvas (its red channel), base64, as soon as it is in the page: the
# first-slice preview is taken off the page at Cornerstone's first render.
_GREY = """(c) => { const g = c.getContext('2d');
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const out = new Uint8Array(d.length / 4);
    for (let i = 0; i < out.length; i += 1) out[i] = d[i * 4];
    let s = ''; for (let i = 0; i < out.length; i += 0x8000)
        s += String.fromCharCode(...out.subarray(i, i + 0x8000));
    return {w: c.width, h: c.height, b64: btoa(s)}; }"""
_KEEP_PREVIEW = f"""new MutationObserver((records) => {{
    for (const r of records) for (const n of r.addedNodes)
        if (n.classList && n.classList.contains('boot-preview') && !window.__preview)
            window.__preview = ({_GREY})(n);
}}).observe(document, {{subtree: true, childList: true}});"""


def _grey(found: dict[str, Any]) -> np.ndarray:
    import base64
    data = np.frombuffer(base64.b64decode(found["b64"]), dtype=np.uint8)
    return data.reshape(found["h"], found["w"]).astype(np.int16)


def test_first_slice_preview_matches_cornerstone(
        world: World, webgl_browser: Browser, server_url: str,  # noqa: F811
        db_url: str) -> None:
    """What boot.ts draws before Cornerstone has loaded (the bench counts it as the first
    image) is the picture Cornerstone then draws of the same slice: same size, same place,
    the same grey values but for the edges' resampling."""
    base = base_of(server_url)
    context, page, errors = open_page(webgl_browser, base, token=world.token, **DESK)
    page.add_init_script(_KEEP_PREVIEW)
    page.goto(f"{base}/workstation/viewer?study={world.study}&layout=1x1")
    page.wait_for_function("() => document.body.dataset.rendered === 'true'", timeout=20000)
    page.wait_for_timeout(300)
    preview = page.evaluate("() => window.__preview || null")
    assert preview is not None, errors  # the slice was drawn before Cornerstone
    drawn = page.evaluate(f"() => ({_GREY})(document.querySelector('.cell .viewport canvas'))")
    index = state(page)["cells"][0]["index"]
    assert index == SLICES // 2 + 1  # the slice boot.ts drew (the middle one)
    ours, theirs = _grey(preview), _grey(drawn)
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    lit = theirs > 8
    assert lit.mean() > 0.10  # a picture, not a black canvas
    # The bone marker of this slice, bright on both (not two blank canvases that agree).
    assert (ours[lit] > 200).sum() == pytest.approx((theirs[lit] > 200).sum(), rel=0.05)
    assert diff.mean() < 1.0, diff.mean()
    assert (diff > 16).mean() < 0.005, (diff > 16).mean()
    # The slice's samples were decoded on the page's thread (inthread.ts, not a worker)
    # into the modality values pydicom gives, every one.
    assert page.evaluate("window.cloudfilmViewer.decodedHere()")["own"] >= 1
    got = page.evaluate("window.cloudfilmViewer.pixels(0)")
    assert got["type"] == "Int16Array" and got["scaled"]
    import base64
    values = np.frombuffer(base64.b64decode(got["data"]), dtype=np.int16).reshape(SIZE, SIZE)
    expected = phantom(world.study, world.series[0], 1, SLICES // 2, nid=world.nid,
                       frame="1.2.3").pixel_array.astype(np.int32) - 1024
    assert np.array_equal(values.astype(np.int32), expected)
    assert not errors
    context.close()
