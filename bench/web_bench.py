"""The resident portal's budgets (issue 13), measured in headless Chromium (Playwright, the
performance timeline) on loopback and on emulated 4G (DevTools: 1.5 MB/s down, 60 ms).

A `cloudfilm serve` on an empty SQLite archive is given one resident with a 300-slice
512x512 CT (bench/synth.py) at one hospital and a small study at another, and a portal
account. Then, at 390x844 with touch:

- timeline: navigation start to DOMContentLoaded and to load (thumbnails included), and
  the page weight without images (HTML + CSS + JS transfer sizes);
- viewer: navigation start to the first frame drawn on the canvas (``cloudfilm:first-frame``
  mark), with the frame cache cold (first visit) and warm;
- a whole 300-slice series scrolled once, one slice after another (each drawn before the
  next is asked for; the viewer prefetches ahead), on 4G;
- the per-frame cost A/B: the 300 frames fetched 6 at a time through the old route (a
  session look-up, policy decision and audit record per frame) and through the viewing's
  capability URLs (one decision per series, services/portal/viewing.py).

    .venv/bin/python bench/web_bench.py            # ~1-2 min
"""

from __future__ import annotations

import random
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from playwright.sync_api import Page, sync_playwright

from cloudfilm.app import build_services, configure_dicom_libraries
from cloudfilm.config import Settings
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration
from server import Cloudfilm
from synth import make_ct_series, to_bytes

SLICES = 300
PHONE = "13800000009"
PHONE_CONTEXT = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
                 "is_mobile": True, "has_touch": True, "locale": "zh-CN"}
FOUR_G = {"offline": False, "latency": 60, "downloadThroughput": 1.5 * 1024 * 1024,
          "uploadThroughput": 0.75 * 1024 * 1024}


def load(data: Path) -> tuple[str, str, str]:
    """Hospitals, studies and the resident's account; returns (token, study, series)."""
    configure_dicom_libraries()
    services = build_services(Settings(data_dir=data, auto_migrate=False))
    nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                               rng=random.Random(9))
    for code in ("BH1", "BH2"):
        services.hospitals.register(HospitalInput(
            code=code, name=f"示范医院{code[-1]}", level="tertiary", grade="A",
            national_id_source="patient_id"))
    work = data.parent / "incoming"
    work.mkdir(exist_ok=True)
    study = series = ""
    for seed, (code, slices) in enumerate((("BH1", SLICES), ("BH2", 20))):
        items = []
        for ds in make_ct_series(slices, patient_id=nid, patient_name="Wang^XiaoDong",
                                 birth_date="19600102", sex="M", seed=seed + 1):
            ds.BodyPartExamined = "CHEST"
            path = work / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(to_bytes(ds))
            items.append(IngestItem(path))
            if code == "BH1":
                study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        results = services.ingest.ingest_files(items, sender=Sender(code, code, "bench"))
        failed = [r for r in results if isinstance(r, Exception)]
        assert not failed, failed[:1]
    # The hospital's registration feed recorded this phone for its patient: the second
    # factor a new account needs (issue 11).
    services.residents.register_patient("BH1", Registration(
        patient_id=nid, national_id=nid, name="Wang^XiaoDong", phone=PHONE))
    services.accounts.send_sign_in_code(PHONE, requester="bench")
    code = re.search(r"\b(\d{6})\b", services.sms.outbox(phone=PHONE, limit=1)[0].text)
    assert code is not None
    signed = services.accounts.register_resident(PHONE, code.group(1), name="Wang XiaoDong",
                                                 national_id=nid, requester="bench")
    return signed.token, study, series


def measure(page: Page, base: str, study: str, series: str, *, scroll: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    page.goto(f"{base}/portal", wait_until="load")
    assert page.url.endswith("/portal"), page.url
    nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].toJSON()")
    out["timeline DOMContentLoaded (ms)"] = round(nav["domContentLoadedEventEnd"])
    out["timeline load, thumbnails in (ms)"] = round(nav["loadEventEnd"] or nav["duration"])
    weight = page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource')
            .filter(r => r.initiatorType !== 'img');
        return nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0);
    }""")
    out["timeline weight without images (KB)"] = round(weight / 1024, 1)
    page.goto(f"{base}/portal/studies/{study}/series/{series}/view")
    assert "/view" in page.url, page.url
    page.wait_for_function("() => performance.getEntriesByName('cloudfilm:first-frame')"
                           ".length > 0")
    out["viewer first image (ms)"] = round(page.evaluate(
        "() => performance.getEntriesByName('cloudfilm:first-frame')[0].startTime"))
    if scroll:
        # In the page, not one Playwright round trip a slice: ask for slice n, wait until
        # it is drawn, go on (the viewer prefetches ahead as it would under a finger).
        elapsed = page.evaluate("""async (count) => {
            const canvas = document.getElementById('view');
            const t0 = performance.now();
            for (let n = 2; n <= count; n += 1) {
                window.cloudfilmViewer.show(n);
                await new Promise((done) => {
                    const check = () => canvas.dataset.index === String(n)
                        ? done() : requestAnimationFrame(check);
                    check();
                });
            }
            return performance.now() - t0;
        }""", SLICES)
        out[f"{SLICES} slices scrolled once (s)"] = round(elapsed / 1000, 1)
    # The per-frame cost, A/B on the same server and network: the same 300 frames fetched
    # 6 at a time (as the browser's connections allow) through the old route, which
    # decides and audits every frame, and through the viewing's capability URLs.
    items = page.evaluate("() => JSON.parse(document.getElementById('frames').textContent)")
    capability = [f"{items['base']}/{sop}/{frame}?preset=default&size=512"
                  for sop, frame in items["items"]]
    decided = [f"/portal/frames/{study}/{series}/{sop}/{frame}?preset=default&size=512"
               for sop, frame in items["items"]]
    fetch_all = """async (urls) => {
        const t0 = performance.now(); let next = 0;
        const worker = async () => { while (next < urls.length) {
            const r = await fetch(urls[next++], {cache: 'no-store'}); await r.arrayBuffer(); } };
        await Promise.all([1, 2, 3, 4, 5, 6].map(worker));
        return performance.now() - t0; }"""
    out[f"{SLICES} frames, decided each (s)"] = round(page.evaluate(fetch_all, decided) / 1000, 1)
    out[f"{SLICES} frames, one decision + capability (s)"] = round(
        page.evaluate(fetch_all, capability) / 1000, 1)
    # Calibration of the network emulation: the 560 KB axe-core bundle (not a page asset).
    axe = page.evaluate("""async () => {
        const src = [...document.scripts].map(s => s.src).find(s => s.includes('viewer'));
        const url = src.replace(/viewer-[^/]+$/, '');
        const t0 = performance.now();
        const r = await fetch(url + (await (await fetch('/static/dist/.vite/manifest.json'))
            .json())['src/axe.js'].file.replace('assets/', ''), {cache: 'no-store'});
        const size = (await r.arrayBuffer()).byteLength;
        return [size, performance.now() - t0];
    }""")
    out["calibration: axe-core fetch (KB, ms)"] = f"{round(axe[0] / 1024)}, {round(axe[1])}"
    return out


def main() -> None:
    with Cloudfilm() as server:
        base = server.dicomweb.rsplit("/dicomweb", 1)[0]
        token, study, series = load(server.workdir / "data")
        rows: dict[str, dict[str, Any]] = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
            for label, net, scroll in (("loopback, frame cache cold", None, True),
                                       ("loopback, warm", None, False),
                                       ("4G, frame cache warm", FOUR_G, True)):
                context = browser.new_context(**PHONE_CONTEXT)
                context.add_cookies([{"name": "cloudfilm_session", "value": token,
                                      "url": base}])
                page = context.new_page()
                page.on("response", lambda r: print("http", r.status, r.url[:120])
                        if r.status >= 400 else None)
                if net:
                    cdp = context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.emulateNetworkConditions", net)
                rows[label] = measure(page, base, study, series, scroll=scroll)
                context.close()
            browser.close()
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print("| measure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(r.get(key, "")) for r in rows.values()) + " |")


if __name__ == "__main__":
    # `web_bench.py portal` or `web_bench.py viewer` runs one part; no argument, both.
    if "viewer" not in sys.argv[1:]:
        main()
    if "portal" not in sys.argv[1:]:
        import viewer_bench  # the workstation's diagnostic viewer against OHIF (issue 14)

        viewer_bench.main()
