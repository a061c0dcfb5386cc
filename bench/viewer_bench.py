"""The diagnostic viewer's budgets (issue 14), with OHIF as the anchor in the same run.

A ``cloudfilm serve`` is given a 300-slice 512x512 CT (``bench/synth.py``) at one hospital,
a prior at another, and a doctor of a third hospital with the patient's grant. Headless
Chromium, 1440x900, the doctor's session cookie:

- cloudfilm's viewer (``/workstation/viewer``): navigation to the first image drawn, to the
  whole series loaded; once loaded, scrolling by the test API's ``scrollTo`` (each slice
  asked for once the previous one is drawn) and by real wheel notches (60 a second through
  DevTools' input path, which queues and coalesces them as it does a mouse's: slices drawn
  a second), and a window/level drag (120 mouse moves a second, not awaited one by one:
  renders a second whose window differs from the previous render's);
- the anchor: OHIF's built app from the npm registry's ``@ohif/app`` (``npm pack`` into a temp
  folder at bench time, never committed), served by a small Python static server that also
  passes ``/dicomweb`` to cloudfilm (same origin, the doctor's cookie: the same policy and
  audit path), opening the same study;
- the same on emulated 4G (DevTools: 1.5 MB/s, 60 ms): first image, and frames a second;
- a frame-concurrency micro-bench (``frame_bench.py``): 6 frame GETs in flight, p50/p90,
  cloudfilm against Orthanc.

First image is timed the same way for both viewers: from navigation start until a canvas of
the page shows more than 10% non-black pixels (polled every 50 ms), for cloudfilm the
earlier of that and the animation frame that painted its first-slice canvas (``_on_screen``);
series loaded: cloudfilm's own mark (every slice decoded), the anchor's 300th frame response.
Chromium runs with its own GPU choice (``--gl swiftshader``: the emulated GPU forced for
compositing too, as the viewer tests do). The machine is shared (2 cores); quote medians
of a quiet machine.

    .venv/bin/python bench/viewer_bench.py          # ~5 min (or web_bench.py viewer)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import http.server
import itertools
import os
import shutil
import socketserver
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from playwright.sync_api import Browser, Page, sync_playwright

import frame_bench
from harness import free_port
from server import Cloudfilm
from viewer_world import World, load

SLICES = 300
DESK = {"viewport": {"width": 1440, "height": 900}, "locale": "zh-CN"}
ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking"]
# Chromium's own choice on a machine without a GPU (chrome://gpu here: compositing, raster and
# canvas in software, WebGL through SwiftShader) is the default; ``--gl swiftshader`` forces
# the emulated GPU for compositing and raster too, as the viewer tests do and as this bench
# did until 2026-12-04: no user's browser runs that way, and its GPU process (compositing a
# 1440x900 page through SwiftShader, ~18 ms a frame for any change) sets every rate there.
SWIFTSHADER = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
FOUR_G = {"offline": False, "latency": 60, "downloadThroughput": 1.5 * 1024 * 1024,
          "uploadThroughput": 0.75 * 1024 * 1024}
OHIF_VERSION = "3.13.2"
LIT = """() => [...document.querySelectorAll('canvas')].some(c => {
    if (c.width < 300 || c.height < 300) return false;  // a viewport, not a thumbnail
    const s = document.createElement('canvas'); s.width = 64; s.height = 64;
    const g = s.getContext('2d'); g.drawImage(c, 0, 0, 64, 64);
    const d = g.getImageData(0, 0, 64, 64).data; let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 8 || d[i + 1] > 8) lit += 1;
    return lit > 64 * 64 * 0.10; })"""


# -- OHIF, served beside cloudfilm's DICOMweb ---------------------------------------------------


def fetch_ohif(folder: Path) -> Path:
    """``npm pack @ohif/app`` (its built ``dist/``) into ``folder``; the dist path."""
    subprocess.run(["npm", "pack", f"@ohif/app@{OHIF_VERSION}", "--silent"], cwd=folder,
                   check=True, capture_output=True, timeout=600)
    with tarfile.open(folder / f"ohif-app-{OHIF_VERSION}.tgz") as tar:
        tar.extractall(folder, filter="data")
    dist = folder / "package" / "dist"
    config = (dist / "app-config.js").read_text()
    cut = config.index("dataSources: [")
    end = config.index("httpErrorHandler")
    (dist / "app-config.js").write_text(config[:cut] + """dataSources: [{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'ohif',
      configuration: {
        friendlyName: 'cloudfilm', name: 'cloudfilm',
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: false, imageRendering: 'wadors',
        thumbnailRendering: 'wadors', enableStudyLazyLoad: true,
        supportsFuzzyMatching: false, supportsWildcard: true, staticWado: false,
        singlepart: 'bulkdata,video', bulkDataURI: {enabled: true},
        omitQuotationForMultipartRequest: true,
      },
    }],
  """ + config[end:])
    return dist


class _Proxy(http.server.SimpleHTTPRequestHandler):
    """Static files of OHIF; /dicomweb and /wado passed to cloudfilm (cookie included)."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    local = threading.local()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith(("/dicomweb", "/wado")):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("accept", "cookie", "range")}
            try:
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                self.send_error(502)
                return
            body = response.read()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() in ("content-type", "cache-control"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = Path(self.translate_path(self.path.split("?", 1)[0]))
        if not path.is_file():
            self.path = "/index.html"  # the app's own routes (/viewer?...)
        super().do_GET()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # OHIF cancels requests it no longer needs (broken pipes): not the bench's business.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve_ohif(dist: Path, upstream_port: int) -> tuple[_Server, int]:
    port = free_port()
    handler = type("Proxy", (_Proxy,), {"upstream": ("127.0.0.1", upstream_port),
                                        "local": threading.local()})

    def make(*a: Any) -> _Proxy:
        return handler(*a, directory=str(dist))

    server = _Server(("127.0.0.1", port), make)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


# -- measuring ----------------------------------------------------------------------------------


def _open(browser: Browser, base: str, world: World, net: dict[str, Any] | None
          ) -> tuple[Any, Page, list[float]]:
    context = browser.new_context(**DESK)
    context.add_cookies([{"name": "cloudfilm_session", "value": world.token, "url": base}])
    page = context.new_page()
    frames: list[float] = []
    page.on("response", lambda r: frames.append(time.monotonic())
            if "/frames/" in r.url and r.status == 200 else None)
    if net:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", net)
    return context, page, frames


def _timed_load(page: Page, url: str, frames: list[float], *, whole: bool,
                limit: float) -> dict[str, Any]:
    t0, wall0 = time.monotonic(), time.time()
    page.goto(url, wait_until="commit")
    page.wait_for_function(LIT, polling=50, timeout=limit * 1000)
    out: dict[str, Any] = {"first image (s)": round(time.monotonic() - t0, 2)}
    # navigation start, in s after the bench's clock started (marks count from it)
    out["_nav"] = page.evaluate("performance.timeOrigin") / 1000 - wall0
    if whole:
        deadline = t0 + limit
        while not _series_done(page, frames) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        own = page.evaluate(_MARK, "cloudfilm:series-loaded")
        if own is not None:  # cloudfilm: every slice decoded and cached (its own mark)
            out["series loaded (s)"] = round(own / 1000, 2)
        else:  # the anchor: the 300th frame response
            out["series loaded (s)"] = (round(frames[SLICES - 1] - t0, 2)
                                        if len(frames) >= SLICES else f"> {limit:.0f}")
    else:
        page.wait_for_timeout(10_000)
        done = [t for t in frames if t - t0 <= 10 + out["first image (s)"]]
        out["frames in first 10 s"] = len(done)
    return out


_MARK = """(name) => { const m = performance.getEntriesByName(name)[0];
    return m ? m.startTime : null; }"""


def _on_screen(page: Page, row: dict[str, Any]) -> None:
    """cloudfilm's first image as the user sees it: the poll above runs on the page's main
    thread, which the bundle's evaluation holds for a few hundred ms right after boot.ts has
    drawn the first slice (a canvas the same size, with the same pixels as Cornerstone's
    render: ``test_viewer_chromium.py::test_first_slice_preview_matches_cornerstone``). The
    animation frame that paints it is marked; the earlier of the two counts."""
    polled = row["first image (s)"]
    painted = page.evaluate(_MARK, "cloudfilm:first-preview-frame")
    row["first image polled (s)"] = polled
    if painted is not None and isinstance(polled, float):
        row["first image (s)"] = round(min(polled, row["_nav"] + painted / 1000), 2)

# Where the first image's time went (ms from navigation start), from the page's own marks
# (main.ts) and the resource timing of the requests on its path.
_BREAKDOWN = """() => {
    const r = Math.round;
    const mark = (n) => { const m = performance.getEntriesByName(n)[0];
                          return m ? r(m.startTime) : null; };
    const res = performance.getEntriesByType('resource');
    const nav = performance.getEntriesByType('navigation')[0];
    const find = (f) => res.find(f);
    const js = find((e) => /\\/diagnostic-(?!boot)[^/]+\\.js$/.test(e.name));
    const meta = find((e) => e.name.endsWith('/metadata'));
    const frame = find((e) => /\\/(frames|pixeldata)/.test(e.name));
    return {
        'HTML received': r(nav.responseEnd),
        'JS received': js ? r(js.responseEnd) : null,
        'JS evaluated': mark('cloudfilm:script'),
        'Cornerstone ready': mark('cloudfilm:cornerstone'),
        'metadata sent/received': meta ? `${r(meta.startTime)}/${r(meta.responseEnd)}` : null,
        'first frame sent/received': frame ? `${r(frame.startTime)}/${r(frame.responseEnd)}`
            : null,
        'first slice drawn before Cornerstone': mark('cloudfilm:first-preview'),
        'first frame decoded': mark('cloudfilm:first-decoded'),
        'first image rendered': mark('cloudfilm:first-image'),
        'series loaded': mark('cloudfilm:series-loaded'),
        'renderer': document.body.dataset.renderer || null,
    };
}"""


def _series_done(page: Page, frames: list[float]) -> bool:
    if len(frames) >= SLICES:
        return True
    try:
        return page.evaluate(_MARK, "cloudfilm:series-loaded") is not None
    except Exception:  # the anchor's page: no such mark, same answer
        return False


# What the viewport drew, each IMAGE_RENDERED: (ms, slice index, VOI lower, VOI upper), and the
# time from the animation frame's start to the render event (the main thread's work in a frame
# that drew: a long one is what drops frames). Installed once a page is loaded.
_RENDER_LOG = """() => {
    const v = window.cloudfilmViewer;
    const el = document.querySelector('.cell .viewport');
    const probe = () => { const c = v.state().cells[0]; const voi = c.voi || {};
                          return [c.index, voi.lower, voi.upper]; };
    window.__drawn = []; window.__frameMs = []; window.__moves = 0; window.__wheels = 0;
    let frameStart = 0;
    const tick = (t) => { frameStart = t; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    el.addEventListener('CORNERSTONE_IMAGE_RENDERED', () => {
        const now = performance.now();
        window.__drawn.push([now, ...probe()]);
        window.__frameMs.push(now - frameStart); });
    document.addEventListener('mousemove', () => { window.__moves += 1; }, {passive: true});
    document.addEventListener('wheel', () => { window.__wheels += 1; }, {passive: true});
}"""
_RESET = """() => { window.__drawn = []; window.__frameMs = []; window.__moves = 0;
                     window.__wheels = 0; return performance.now(); }"""


def _send_paced(page: Page, events: list[tuple[float, str, dict[str, Any]]]) -> None:
    """Send CDP input events at their times (s from now) without waiting for each one's
    acknowledgement, as a mouse does: the browser queues and coalesces them as it does real
    input (moves and wheel notches folded into the next frame) instead of one at a time.
    Playwright's sync API awaits every call, hence its async layer (the session's own loop)."""
    cdp = page.context.new_cdp_session(page)
    impl, loop = cdp._impl_obj, cdp._loop

    async def pace() -> None:
        t0 = loop.time()
        sent = []
        for at, method, params in events:
            delay = t0 + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(loop.create_task(impl.send(method, params, None)))
        # every event handled by the page (its acknowledgement), or 30 s on a starved machine
        await asyncio.wait(sent, timeout=30)

    cdp._sync(pace())
    cdp.detach()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _scroll_programmatic(page: Page) -> dict[str, Any]:
    # Each slice asked for (the test API's scrollTo) once the previous one is drawn; per
    # slice, the time from the request to its render event.
    scroll = page.evaluate("""async (count) => {
        const v = window.cloudfilmViewer;
        const el = document.querySelector('.cell .viewport');
        let renders = 0;
        el.addEventListener('CORNERSTONE_IMAGE_RENDERED', () => { renders += 1; });
        const each = [];
        const t0 = performance.now();
        // At most 8 s: a slow renderer is measured on the slices it managed.
        for (let n = 1; n <= count && performance.now() - t0 < 8000; n += 1) {
            const t = performance.now();
            await v.scrollTo(0, n);
            const want = renders + 1;
            await new Promise((ok) => { const f = () => renders >= want ? ok() :
                requestAnimationFrame(f); f(); });
            each.push(performance.now() - t);
        }
        const rate = each.length / ((performance.now() - t0) / 1000);
        each.sort((a, b) => a - b);
        return {rate, p50: each[Math.floor(each.length / 2)],
                p90: each[Math.floor(each.length * 0.9)]};
    }""", SLICES)
    return {"scroll by scrollTo (slices/s)": round(scroll["rate"], 1),
            "scrollTo ms/slice p50/p90": f"{scroll['p50']:.0f}/{scroll['p90']:.0f}"}


WHEEL_HZ, WHEEL_S = 60, 3.0  # notches a second (a wheel spun briskly), for how long
DRAG_HZ, DRAG_S = 120, 3.0  # mouse moves a second (a 125 Hz mouse), for how long


def _scroll_wheel(page: Page, x: float, y: float) -> dict[str, Any]:
    # Real wheel notches over the viewport (through the browser's input path), from slice 1
    # down; counted: slices drawn (renders whose slice differs from the previous render).
    page.evaluate("() => window.cloudfilmViewer.scrollTo(0, 1)")
    page.wait_for_timeout(300)
    t0 = page.evaluate(_RESET)
    count = int(WHEEL_HZ * WHEEL_S)
    _send_paced(page, [(k / WHEEL_HZ, "Input.dispatchMouseEvent",
                        {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": 100})
                       for k in range(count)])
    page.wait_for_timeout(300)  # the last notches drawn
    drawn = page.evaluate("window.__drawn")
    wheels = page.evaluate("window.__wheels")
    slices, last, times = 0, 1, []
    for t, index, *_ in drawn:
        if index != last:
            slices += 1
            times.append(t)
        last = index
    span = max(WHEEL_S, ((times[-1] - t0) / 1000) if times else 0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {"scroll by wheel (slices drawn/s)": round(slices / span, 1),
            "wheel ms between slices p50/p90": f"{_pct(gaps, 0.5):.0f}/{_pct(gaps, 0.9):.0f}",
            "wheel notches sent/received a s": f"{count / WHEEL_S:.0f}/{wheels / span:.0f}",
            "wheel end slice": drawn[-1][1] if drawn else None}


def _window_drag(page: Page, x: float, y: float) -> dict[str, Any]:
    # A left-button drag (the W/L tool) moving DRAG_HZ times a second; counted: renders whose
    # VOI differs from the previous render (images drawn with a new window/level).
    page.mouse.move(x, y)
    page.mouse.down()
    page.wait_for_timeout(200)
    t0 = page.evaluate(_RESET)
    count = int(DRAG_HZ * DRAG_S)

    def at(k: int) -> tuple[float, float]:  # back and forth, always somewhere new
        return x + 150 - abs(k % 300 - 150), y + 60 - abs(k % 120 - 60) / 2

    _send_paced(page, [(k / DRAG_HZ, "Input.dispatchMouseEvent",
                        {"type": "mouseMoved", "x": at(k)[0], "y": at(k)[1],
                         "button": "left", "buttons": 1}) for k in range(1, count + 1)])
    page.wait_for_timeout(200)
    drawn = page.evaluate("window.__drawn")
    frame_ms = page.evaluate("window.__frameMs")
    moves = page.evaluate("window.__moves")
    page.mouse.up()
    new, last, times = 0, None, []
    for t, _index, lower, upper in drawn:
        if (lower, upper) != last:
            new += 1
            times.append(t)
        last = (lower, upper)
    span = max(DRAG_S, ((times[-1] - t0) / 1000) if times else 0)
    return {"W/L drag (new-VOI renders/s)": round(new / span, 1),
            "W/L moves sent/received a s": f"{count / DRAG_S:.0f}/{moves / span:.0f}",
            "W/L frame ms to render p50/p90": f"{_pct(frame_ms, 0.5):.1f}/"
                                              f"{_pct(frame_ms, 0.9):.1f}"}


def _scroll_and_window(page: Page) -> dict[str, Any]:
    box = page.locator(".cell .viewport").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    out = _scroll_programmatic(page)
    page.evaluate(_RENDER_LOG)
    out.update(_scroll_wheel(page, x, y))
    out.update(_window_drag(page, x - 150, y - 60))
    return out


def run_browser(server: Cloudfilm, world: World, ohif: Path | None, *, runs: int = 2,
                four_g: bool = True, renderers: tuple[str, ...] = ("auto",),
                gl: str = "default") -> dict[str, dict[str, Any]]:
    base = server.dicomweb.rsplit("/dicomweb", 1)[0]
    ours = f"{base}/workstation/viewer?study={world.study}&layout=1x1"
    rows: dict[str, dict[str, Any]] = {}
    proxy = None
    with sync_playwright() as playwright:
        args = ARGS + (SWIFTSHADER if gl == "swiftshader" else [])
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            plan: list[tuple[str, str, str, dict[str, Any] | None]] = []
            if ohif is not None:
                proxy, port = serve_ohif(ohif, server.http_port)
                obase = f"http://127.0.0.1:{port}"
                plan.append((f"OHIF {OHIF_VERSION} (anchor), loopback", obase,
                             f"{obase}/viewer?StudyInstanceUIDs={world.study}", None))
            for renderer in reversed(renderers):  # auto: the viewer's own choice (backend.ts)
                plan.insert(0, ("cloudfilm viewer" + ("" if renderer == "auto" else
                                                      f" ({renderer} forced)") + ", loopback",
                                base, ours + ("" if renderer == "auto" else
                                              f"&renderer={renderer}"), None))
            for n in range(runs):  # from the second run on, assets come from the HTTP cache
                for label, origin, url, net in plan:
                    context, page, frames = _open(browser, origin, world, net)
                    key = f"{label}, run {n + 1}"
                    try:
                        rows[key] = _timed_load(page, url, frames, whole=True, limit=60)
                        if origin == base:
                            _on_screen(page, rows[key])
                            rows[key]["own mark: first image (ms)"] = round(
                                page.evaluate(_MARK, "cloudfilm:first-image"))
                            BREAKDOWN[key] = page.evaluate(_BREAKDOWN)
                            rows[key].update(_scroll_and_window(page))
                    except Exception as exc:  # a bench reports, it does not stop
                        rows[key] = {"first image (s)": f"failed: {str(exc)[:80]}"}
                    context.close()
                    rows[key].pop("_nav", None)
                    print(key, rows[key], BREAKDOWN.get(key, ""), flush=True)  # as it goes
            for label, origin, url, _ in plan if four_g else []:
                context, page, frames = _open(browser, origin, world, FOUR_G)
                key = label.replace("loopback", "4G (1.5 MB/s, 60 ms)")
                try:
                    rows[key] = _timed_load(page, url, frames, whole=False, limit=90)
                    if origin == base:
                        _on_screen(page, rows[key])
                        BREAKDOWN[key] = page.evaluate(_BREAKDOWN)
                except Exception as exc:
                    rows[key] = {"first image (s)": f"failed: {str(exc)[:80]}"}
                context.close()
                rows[key].pop("_nav", None)
        finally:
            browser.close()
            if proxy is not None:
                proxy.shutdown()
    return rows


BREAKDOWN: dict[str, dict[str, Any]] = {}


def table(rows: dict[str, dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |"
              for name, r in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-anchor", action="store_true", help="skip OHIF")
    parser.add_argument("--no-frames", action="store_true", help="skip frame_bench")
    parser.add_argument("--frames-orthanc", action="store_true",
                        help="frame_bench against Orthanc too (~2 min more)")
    parser.add_argument("--no-4g", action="store_true", help="skip the emulated 4G runs")
    parser.add_argument("--runs", type=int, default=2, help="loopback runs per viewer")
    parser.add_argument("--gl", choices=("default", "swiftshader"), default="default",
                        help="Chromium's own GPU choice (default) or SwiftShader forced for "
                             "compositing and raster too (the viewer tests' flags)")
    parser.add_argument("--renderers", default="auto",
                        help="comma-separated: auto (the viewer's choice), cpu, gpu")
    args = parser.parse_args([a for a in sys.argv[1:] if a != "viewer"])  # web_bench.py viewer
    print(f"load average at start: {os.getloadavg()}")
    temp = Path(tempfile.mkdtemp(prefix="cloudfilm-ohif-"))
    try:
        ohif: Path | None = None
        if not args.no_anchor:
            try:
                ohif = fetch_ohif(temp)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                print(f"OHIF anchor not run: {exc}")
        with Cloudfilm() as server:
            world = load(server.workdir / "data", slices=SLICES)
            rows = run_browser(server, world, ohif, runs=args.runs, four_g=not args.no_4g,
                               renderers=tuple(args.renderers.split(",")), gl=args.gl)
            micro = None if args.no_frames else frame_bench.run(
                server, world, orthanc=args.frames_orthanc)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    forced = f"SwiftShader forced ({' '.join(SWIFTSHADER)})"
    print(f"Chromium: {forced if args.gl == 'swiftshader' else 'its own GPU choice (no GL flags)'}")
    print("Viewer, headless Chromium (WebGL through SwiftShader), 1440x900, 300-slice 512x512 CT, "
          "doctor with grant; budgets: first image < 1 s, series < 4 s, scroll > 20/s, "
          "W/L 30/s")
    print(table(rows))
    print()
    print("cloudfilm's first image, where the time went (ms from navigation start)")
    print(table(BREAKDOWN))
    if micro is not None:
        print()
        print(f"Frames, {frame_bench.CONCURRENCY} GETs in flight (medians over the series)")
        print(frame_bench.table(micro))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
