"""WADO-RS frames under a viewer's parallel prefetch (issue 14): cloudfilm against Orthanc.

A browser opens at most 6 HTTP/1.1 connections to one host, so a viewer prefetching a
series keeps about 6 frame requests in flight. This asks for every frame of the 300-slice
CT (``bench/synth.py``) with ``CONCURRENCY`` requests in flight, as the doctor of another
hospital holding the patient's grant (cloudfilm: session cookie, the policy and the audit
trail on every request) and as Orthanc's open REST API, and reports p50/p90 latency and
the whole series' wall time. Loopback only; bounded.

    .venv/bin/python bench/frame_bench.py       # ~1 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from harness import ServerUnavailable
from orthanc import Orthanc
from server import Cloudfilm
from viewer_world import World, load

CONCURRENCY = 6
ACCEPT_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _frames(base: str, urls: list[str], *, cookies: dict[str, str] | None = None,
            concurrency: int = CONCURRENCY, server: Any = None) -> dict[str, float]:
    """Every URL once with ``concurrency`` in flight: p50/p90 (ms), the wall time (s) and,
    given the ``server``, its CPU time a frame (ms: what other load on the machine moves
    least)."""
    cpu0 = server.cpu_seconds() if server is not None else 0.0
    times: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=base, cookies=cookies, limits=limits,
                      timeout=httpx.Timeout(60.0)) as client:
        def get(url: str) -> None:
            t0 = time.perf_counter()
            r = client.get(url, headers={"Accept": ACCEPT_FRAME})
            r.raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(get, urls))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(times, n=10)
    out = {"p50 (ms)": round(statistics.median(times), 1), "p90 (ms)": round(q[8], 1),
           "series (s)": round(wall, 2)}
    if server is not None:
        out["server CPU a frame (ms)"] = round(
            (server.cpu_seconds() - cpu0) * 1000 / len(urls), 1)
    return out


def cloudfilm_urls(world: World) -> list[str]:
    return [f"/dicomweb/studies/{world.study}/series/{world.series}/instances/{uid}/frames/1"
            for uid in world.instances]


def orthanc_urls(server: Orthanc, incoming: Path, study: str) -> tuple[str, list[str]]:
    """Send ``study``'s files to Orthanc; its DICOMweb root and frame URLs, head first."""
    import pydicom

    base = server.dicomweb.rsplit("/dicom-web", 1)[0]
    urls: list[tuple[float, str]] = []
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for path in sorted(incoming.glob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.StudyInstanceUID) != study:
                continue
            client.post("/instances", content=path.read_bytes()).raise_for_status()
            urls.append((float(ds.ImagePositionPatient[2]),
                             f"/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                             f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"))
    return base, [u for _, u in sorted(urls, reverse=True)]


def run(cloudfilm: Cloudfilm, world: World, *, rounds: int = 2,
        orthanc: bool = True) -> dict[str, dict[str, Any]]:
    base = cloudfilm.dicomweb.rsplit("/dicomweb", 1)[0]
    rows: dict[str, dict[str, Any]] = {}
    urls = cloudfilm_urls(world)
    cookie = {"cloudfilm_session": world.token}
    for n in range(rounds):
        rows[f"cloudfilm, doctor with grant, round {n + 1}"] = _frames(
            base, urls, cookies=cookie, server=cloudfilm)
    if not orthanc:
        return rows
    try:
        with Orthanc() as server:
            obase, ourls = orthanc_urls(server, cloudfilm.workdir / "incoming", world.study)
            for n in range(rounds):
                rows[f"Orthanc 1.10, open API, round {n + 1}"] = _frames(obase, ourls,
                                                                         server=server)
    except ServerUnavailable as exc:
        rows["Orthanc"] = {"p50 (ms)": f"not run: {exc}"}
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |"
              for name, r in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-orthanc", action="store_true", help="cloudfilm only")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with Cloudfilm() as server:
        world = load(server.workdir / "data")
        rows = run(server, world, rounds=args.rounds, orthanc=not args.no_orthanc)
    print(f"{CONCURRENCY} frame requests in flight, 300 frames of 512x512 CT, loopback; "
          "server and client share 2 cores")
    print(table(rows))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
