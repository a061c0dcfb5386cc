"""AI results beside the images (issue 19) in Debian's headless Chromium: the sample
lung-nodule plug-in has run on a chest CT phantom with one 12 mm nodule; a doctor of the
hospital opens it in the diagnostic viewer. Checked: the findings list marked "AI-generated,
not a diagnosis"; a click on the finding jumps to its slice; the SEG overlay's colour
(magenta) at the nodule's known pixel, gone when the overlay is switched off; the render
time of the overlay. The patient's portal shows nothing of it before the doctor confirms,
and the finding with the doctor's name after. Screenshots under tests/artifacts/ai/."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pytest
from bench.synth import make_ct_series
from PIL import Image
from playwright.sync_api import Browser, Page
from tests.conftest import TEST_HTTP, TEST_SECURITY
from tests.factories import to_bytes
from tests.integration.web.support import latest_code
from tests.interop.chromium import DESK, browser  # noqa: F401
from tests.interop.test_dicomweb_client import server_url  # noqa: F401
from tests.interop.test_viewer_chromium import at

from cloudfilm.app import build_services
from cloudfilm.config import AiSettings, Settings
from cloudfilm.interfaces.web.assets import Assets
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.ai.registry import AlgorithmInput
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ai"
PHONE = "13900139019"
NODULE = (-70.0, -20.0, -40.0, 12.0)  # x, y, z, diameter (mm), inside the right lung


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                    security=TEST_SECURITY, http=TEST_HTTP, ai=AiSettings(settle_seconds=0))


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.health._db.dispose()


def _world(services: Services, tmp: Path) -> tuple[str, str, str]:
    """(study UID, the doctor's session token, the resident's session token)."""
    assert services.ai is not None
    nid = national_id.generate(area_code="330106", birth_date=date(1958, 5, 6), sex="F",
                               rng=random.Random(19))
    services.hospitals.register(HospitalInput(code="HA", name="示范医院HA", level="tertiary",
                                              grade="A", national_id_source="patient_id"))
    services.residents.register_patient("HA", Registration(
        patient_id=nid, national_id=nid, name="Zhao^Min", sex="F", birth_date="19580506",
        phone=PHONE))
    reg = services.ai.registry
    algo, _ = reg.register(Actor(kind="admin", subject="admin:1"), AlgorithmInput(
        name="lung-nodules", version="0.1", kind="plugin", plugin="builtin:lung-nodules",
        intended_use="Demonstration only", modalities=("CT",), body_parts=("CHEST",)))
    reg.approve(LOCAL_OPERATOR, algo.id)
    reg.enable(LOCAL_OPERATOR, algo.id, "HA")
    services.ai.work.forget_cache()
    items = []
    for ds in make_ct_series(40, patient_id=nid, patient_name="Zhao^Min", sex="F",
                             birth_date="19580506", size=128, slice_thickness=2.5,
                             t_range=(0.05, 0.4), nodules=[NODULE]):
        path = tmp / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        items.append(IngestItem(path))
    stored = services.ingest.ingest_files(items, sender=Sender("HA", "HA", "test"))
    assert not [r for r in stored if isinstance(r, Exception)]
    assert services.ai.work.run_pending() == {"COMPLETED": 1}
    services.accounts.create_account(NewAccount(
        kind="doctor", username="dr.ai", password="correct horse battery",
        display_name="王医生", hospital_code="HA", department="放射科"), by=LOCAL_OPERATOR)
    doctor = services.accounts.sign_in_password("dr.ai", "correct horse battery",
                                                requester="test")
    services.accounts.send_sign_in_code(PHONE, requester="test")
    resident = services.accounts.register_resident(
        PHONE, latest_code(services, PHONE), name="Zhao Min", national_id=nid,
        requester="test")
    return _study(services), doctor.token, resident.token


def _study(services: Services) -> str:
    assert services.ai is not None
    [item] = services.ai.work.search(LOCAL_OPERATOR)
    return item.study_instance_uid


def _rgb(page: Page, name: str) -> Image.Image:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return Image.open(io.BytesIO(page.screenshot(path=str(ARTIFACTS / f"{name}.png"))))\
        .convert("RGB")


def _magenta(img: Image.Image, xy: tuple[float, float]) -> float:
    """How much redder-and-bluer than green the pixels around ``xy`` are (0 for grey)."""
    x, y = round(xy[0]), round(xy[1])
    a = np.asarray(img.crop((x - 1, y - 1, x + 2, y + 2))).reshape(-1, 3).astype(float)
    return float(np.mean((a[:, 0] + a[:, 2]) / 2 - a[:, 1]))


def test_viewer_overlays_the_ai_result_and_the_portal_waits_for_the_doctor(
        services: Services, tmp_path: Path, browser: Browser,  # noqa: F811
        server_url: str) -> None:  # noqa: F811
    if not Assets().built:
        pytest.fail("the web assets are not built: run `make install`")
    study, doctor_token, resident_token = _world(services, tmp_path)
    assert services.ai is not None
    [found] = services.ai.results.sets(LOCAL_OPERATOR, study)
    nodule = max(found.findings, key=lambda f: f["diameter_mm"])
    base = server_url.rsplit("/", 1)[0]

    # The patient first: nothing of the AI result before a doctor confirmed it.
    phone = browser.new_context(locale="zh-CN")
    phone.add_cookies([{"name": "cloudfilm_session", "value": resident_token, "url": base}])
    portal = phone.new_page()
    portal.goto(f"{base}/portal/studies/{study}")
    body = portal.locator("main").inner_text()
    assert "AI" not in body and "SEG" not in body, body
    assert portal.locator(".ai-result").count() == 0
    # ... nor in the download of the whole study (the 40 images and the DICOMDIR).
    zipped = httpx.get(f"{base}/portal/studies/{study}/download.zip",
                       cookies={"cloudfilm_session": resident_token})
    assert zipped.status_code == 200
    assert len(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()) == 41

    desk = browser.new_context(locale="zh-CN", **DESK)
    desk.add_cookies([{"name": "cloudfilm_session", "value": doctor_token, "url": base}])
    page = desk.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/workstation/viewer?study={study}")
    try:
        page.wait_for_function("() => document.body.dataset.aiOverlay === 'true'",
                               timeout=20000)
    except Exception:
        raise AssertionError((page.evaluate("window.cloudfilmViewer?.ai()"), errors)) from None
    panel = page.locator("#ai-panel")
    assert panel.is_visible()
    assert "AI 生成，并非诊断" in panel.inner_text()
    findings = page.locator(".ai-finding")
    assert findings.count() == len(found.findings) >= 1
    first = findings.first.inner_text()
    size = f"{nodule['diameter_mm']:.1f} mm"
    assert "肺部" in first and size in first and "%" in first, first

    # A click on the finding: its slice, with the overlay's colour on the nodule.
    findings.first.click()
    slice_no = int(findings.first.get_attribute("data-slice") or 0)
    page.wait_for_function(f"() => window.cloudfilmViewer.state().cells[0].index === {slice_no}")
    page.wait_for_timeout(300)
    img = _rgb(page, "01-overlay")
    where = at(page, 0, nodule["column"], nodule["row"])
    state = page.evaluate("window.cloudfilmViewer.ai()")
    assert _magenta(img, where) > 40, (where, state)
    away = at(page, 0, 5, 5)  # outside the body: no overlay
    assert abs(_magenta(img, away)) < 10
    (ARTIFACTS / "overlay-render-ms.txt").write_text(f"{state['renderMs']:.1f}\n")

    # Fainter at a lower opacity (the fill, inside the outline).
    centre = _magenta(img, where)
    page.locator("#ai-opacity").fill("15")
    page.wait_for_timeout(300)
    assert _magenta(_rgb(page, "01-overlay-faint"), where) < centre - 20

    # Switched off: grey again.
    page.locator("#ai-show").uncheck()
    page.wait_for_timeout(300)
    assert abs(_magenta(_rgb(page, "02-overlay-off"), where)) < 10

    # The doctor confirms; the portal shows the finding, AI-assisted, with the doctor.
    page.get_by_role("button", name="确认结果").click()
    page.wait_for_function("() => document.getElementById('ai-status').dataset.review "
                           "=== 'confirmed'")
    assert "王医生" in page.locator("#ai-status").inner_text()
    assert [e for e in errors if "favicon" not in e] == [], errors
    portal.reload()
    card = portal.locator(".ai-result")
    assert card.count() == 1
    text = card.inner_text()
    assert "AI 辅助发现" in text and "王医生" in text and f"直径 {size}" in text, text
    portal.screenshot(path=str(ARTIFACTS / "03-portal-confirmed.png"), full_page=True)
    phone.close()
    desk.close()
