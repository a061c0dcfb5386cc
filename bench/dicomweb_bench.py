"""DICOMweb benchmark: Orthanc 1.10 against cloudfilm on the same synthetic data, one run.

    python bench/dicomweb_bench.py [--quick] [--index sqlite|postgresql|both]

For each index backend and each server: STOW-RS ingest, QIDO-RS study search with 10,000
studies indexed, series QIDO and /metadata, WADO-RS series retrieval against a plain disk
read, one frame and /rendered, peak RSS and CPU. Prints one markdown table and writes it with
the raw numbers to bench/out/. Loopback only; every loop is bounded; see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pickle
import platform
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness import (
    BENCH_DIR,
    WORK_DIR,
    ManagedServer,
    PgCpuMeter,
    ServerUnavailable,
    pg_backend_cpu_seconds,
)
from orthanc import Orthanc
from server import EXE, Cloudfilm
from synth import make_ct_series, make_small_studies, random_patient, to_bytes

OUT_DIR = BENCH_DIR / "out"
SERIES_SLICES = 300
BATCH, CLIENTS, SMALL_BATCH = 50, 4, 250
TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # bounds every request
DICOM_JSON = "application/dicom+json"
ACCEPT_SERIES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
SEED = 20240601
SERVERS = ("orthanc", "cloudfilm")


@dataclass(frozen=True)
class Plan:
    name: str
    batch_rounds: int  # timed rounds of 50-instance requests from 4 clients
    studies_per_round: int  # 300-slice studies sent per batch round
    single_rounds: int  # timed rounds of 1-instance requests from 1 client
    single_per_round: int
    small_studies: int  # 1-instance 64x64 studies loaded before the queries
    qido_requests: int = 300
    series_requests: int = 30
    frame_requests: int = 30
    wado_repeats: int = 5


FULL = Plan("full", 3, 3, 3, 100, 10_000)
QUICK = Plan("quick", 1, 1, 1, 200, 1_000, series_requests=10, frame_requests=15)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool
    target: tuple[str, float] | None = None  # ("ratio", x): ratio >= x; ("below", x): < x ms

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        kind, x = self.target
        return f">= {x:g}x Orthanc" if kind == "ratio" else f"< {x:g} {self.unit}"


METRICS = [
    Metric("ingest_batch", "STOW-RS ingest, 50/request, 4 clients", "inst/s", True,
           ("ratio", 2.0)),
    Metric("cpu_batch", "server CPU per instance (50/request)", "ms", False),
    Metric("pg_cpu_batch", "PostgreSQL backend CPU per instance (50/request)", "ms", False),
    Metric("ingest_single", "STOW-RS ingest, 1/request, 1 client", "inst/s", True,
           ("ratio", 1.2)),
    Metric("cpu_single", "server CPU per instance (1/request)", "ms", False),
    Metric("pg_cpu_single", "PostgreSQL backend CPU per instance (1/request)", "ms", False),
    # Many senders of one object each at once (modalities, gateways): the group commit's case.
    Metric("ingest_single4", "STOW-RS ingest, 1/request, 4 clients", "inst/s", True,
           ("ratio", 1.2)),
    Metric("cpu_single4", "server CPU per instance (1/request, 4 clients)", "ms", False),
    Metric("pg_cpu_single4", "PostgreSQL backend CPU per instance (1/request, 4 clients)",
           "ms", False),
    Metric("load_small", "STOW-RS load of 64x64 studies, 250/request, 4 clients", "inst/s",
           True),
    Metric("qido_patient_p50", "QIDO studies?PatientID= p50", "ms", False),
    Metric("qido_patient_p95", "QIDO studies?PatientID= p95", "ms", False, ("below", 5.0)),
    Metric("qido_instances_p50", "QIDO series instances (300) p50", "ms", False),
    Metric("qido_instances_p95", "QIDO series instances (300) p95", "ms", False,
           ("below", 20.0)),
    Metric("metadata_p50", "series /metadata (300) p50", "ms", False),
    Metric("metadata_p95", "series /metadata (300) p95", "ms", False, ("below", 20.0)),
    Metric("wado_series", "WADO-RS series (300 instances), median of 5", "MB/s", True,
           ("ratio", 1.3)),
    Metric("disk_read", "same 300 files read from page cache (reference)", "MB/s", True),
    Metric("frame_p50", "WADO-RS /frames/1 p50", "ms", False),
    Metric("rendered_p50", "WADO-RS /rendered JPEG p50", "ms", False),
    Metric("peak_rss", "server peak RSS (VmHWM)", "MiB", False),
    Metric("cpu_total", "server CPU time, whole run", "s", False),
]


@dataclass
class Series:
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    paths: list[str]


@dataclass
class Data:
    batch_rounds: list[list[Series]]
    single_rounds: list[list[str]]  # file paths per round
    target: Series  # the 300-instance series that the queries and retrievals use
    small: list[tuple[str, bytes]] = field(repr=False)  # (PatientID, Part 10 bytes)
    concurrent_rounds: list[list[str]] = field(default_factory=list)  # 1/request, 4 clients


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data, generated once and cached in bench/work/ (gitignored) keyed by plan and synth.py.


def write_series(folder: Path, n: int, index: int) -> Series:
    folder.mkdir(parents=True, exist_ok=True)
    patient = random_patient(random_rng(index), index)
    patient["patient_id"] = f"CT{index:05d}"  # apart from the small studies' P0000000...
    paths, sops, ds = [], [], None
    for i, ds in enumerate(make_ct_series(n, seed=SEED, **patient)):
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(str(path))
        sops.append(str(ds.SOPInstanceUID))
    assert ds is not None
    return Series(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sops, paths)


def random_rng(index: int) -> np.random.Generator:
    return np.random.default_rng([SEED, index])


def prepare_data(plan: Plan) -> Data:
    synth_hash = hashlib.sha256((BENCH_DIR / "synth.py").read_bytes()).hexdigest()[:10]
    key = hashlib.sha256(f"{plan}{SEED}{synth_hash}concurrent".encode()).hexdigest()[:12]
    root = WORK_DIR / f"data-{plan.name}-{key}"
    manifest = root / "manifest.json"
    if manifest.exists():
        raw = json.loads(manifest.read_text())
        small = pickle.loads((root / "small.pickle").read_bytes())
        rounds = [[Series(**s) for s in r] for r in raw["batch_rounds"]]
        log(f"reusing generated data in {root}")
        return Data(rounds, raw["single_rounds"], rounds[0][0], small,
                    raw["concurrent_rounds"])
    for old in WORK_DIR.glob(f"data-{plan.name}-*"):  # stale after a plan or synth change
        shutil.rmtree(old, ignore_errors=True)
    start = time.perf_counter()
    log(f"generating synthetic CT into {root} ...")
    index = 0
    rounds = []
    for _ in range(plan.batch_rounds):
        rounds.append([])
        for _ in range(plan.studies_per_round):
            rounds[-1].append(write_series(root / f"ct-{index:03d}", SERIES_SLICES, index))
            index += 1
    single = write_series(root / f"ct-{index:03d}",
                          plan.single_rounds * plan.single_per_round, index)
    per = plan.single_per_round
    single_rounds = [single.paths[i * per:(i + 1) * per] for i in range(plan.single_rounds)]
    concurrent = write_series(root / f"ct-{index + 1:03d}",
                              plan.single_rounds * plan.single_per_round, index + 1)
    concurrent_rounds = [concurrent.paths[i * per:(i + 1) * per]
                         for i in range(plan.single_rounds)]
    small = list(make_small_studies(plan.small_studies, n_patients=plan.small_studies // 2,
                                    seed=SEED))
    (root / "small.pickle").write_bytes(pickle.dumps(small))
    manifest.write_text(json.dumps({
        "batch_rounds": [[asdict(s) for s in r] for r in rounds],
        "single_rounds": single_rounds,
        "concurrent_rounds": concurrent_rounds,
    }))
    log(f"generated in {time.perf_counter() - start:.0f} s")
    return Data(rounds, single_rounds, rounds[0][0], small, concurrent_rounds)


# ---------------------------------------------------------------------------------------------
# HTTP helpers. One httpx.Client per thread: keep-alive, TCP_NODELAY (httpcore sets it).


# Headers every request to the server under test carries (--as-hospital: its credential).
CLIENT_HEADERS: dict[str, str] = {}


def new_client() -> httpx.Client:
    # identity: Orthanc gzips answers when asked, which would measure zlib, not the archive.
    return httpx.Client(timeout=TIMEOUT,
                        headers={"Accept-Encoding": "identity", **CLIENT_HEADERS})


def hospital_credential(srv: ManagedServer) -> str:
    """Register hospital BENCH in a running cloudfilm and issue it a cfh_ credential (with
    the server's own CLI, same index and secrets)."""
    data = str(srv.workdir / "data")
    subprocess.run([str(EXE), "hospitals", "add", "--data", data, "--level", "tertiary",
                    "BENCH", "Bench hospital"], check=True, capture_output=True, env=srv.env)
    issued = subprocess.run([str(EXE), "hospitals", "issue-credential", "--data", data,
                             "BENCH"], check=True, capture_output=True, text=True,
                            env=srv.env).stdout
    return next(w for w in issued.split() if w.startswith("cfh_"))


def stow_body(parts: list[bytes]) -> tuple[str, bytes, int]:
    """Content-Type, body and instance count of one STOW-RS request (PS3.18 10.5)."""
    boundary = f"bench-{os.urandom(8).hex()}"
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(c for p in parts for c in (head, p, b"\r\n")) + f"--{boundary}--\r\n".encode()
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body, len(parts)


def post_stow(client: httpx.Client, base: str, ctype: str, body: bytes) -> int:
    """POST one STOW-RS request; return how many instances the server says it stored."""
    r = client.post(f"{base}/studies", content=body,
                    headers={"Content-Type": ctype, "Accept": DICOM_JSON})
    try:
        refs = r.json().get("00081199", {}).get("Value") or []  # ReferencedSOPSequence
    except (ValueError, AttributeError):
        return 0
    return len(refs) if r.status_code in (200, 202) else 0


def stow_parallel(base: str, bodies: list[tuple[str, bytes, int]], clients: int
                  ) -> tuple[int, int, float]:
    """Send ``bodies`` from ``clients`` threads; return (stored, failed, seconds)."""
    work: queue.SimpleQueue[tuple[str, bytes, int]] = queue.SimpleQueue()
    for b in bodies:
        work.put(b)

    def worker() -> tuple[int, int]:
        stored = failed = 0
        with new_client() as client:
            while True:
                try:
                    ctype, body, n = work.get_nowait()
                except queue.Empty:
                    return stored, failed
                try:
                    ok = post_stow(client, base, ctype, body)
                except httpx.HTTPError:
                    ok = 0
                stored, failed = stored + ok, failed + n - ok

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [f.result() for f in [pool.submit(worker) for _ in range(clients)]]
    took = time.perf_counter() - start
    return sum(s for s, _ in results), sum(f for _, f in results), took


def timed_gets(client: httpx.Client, urls: list[str], accept: str,
               check: Callable[[httpx.Response], bool], warmup: int = 3
               ) -> tuple[list[float], int, list[httpx.Response | None]]:
    """GET each URL in turn on one keep-alive connection; ms of the good ones, error count."""
    for url in urls[:warmup]:
        with suppress(httpx.HTTPError):
            client.get(url, headers={"Accept": accept})
    times, errors, answers = [], 0, []
    for url in urls:
        start = time.perf_counter()
        try:
            r: httpx.Response | None = client.get(url, headers={"Accept": accept})
        except httpx.HTTPError:
            r = None
        took = (time.perf_counter() - start) * 1000
        answers.append(r)
        if r is not None and r.status_code == 200 and check(r):
            times.append(took)
        else:
            errors += 1
    return times, errors, answers


def json_len(expected: int) -> Callable[[httpx.Response], bool]:
    def check(r: httpx.Response) -> bool:
        try:
            return len(r.json()) == expected
        except ValueError:
            return False
    return check


def stream_multipart(client: httpx.Client, url: str, accept: str) -> tuple[int, int]:
    """GET a multipart answer, streaming it as a viewer would; return (bytes, parts).

    httpx's ``.content`` tops out near 200 MB/s here while streaming reads ~850 MB/s (curl
    ~1 GB/s), so buffering the body would measure the client instead of the server.
    """
    with client.stream("GET", url, headers={"Accept": accept}) as r:
        m = re.search(r'boundary="?([^";,\s]+)"?', r.headers.get("content-type", ""), re.I)
        if r.status_code != 200 or m is None:
            return 0, 0
        delim = b"--" + m.group(1).encode()
        size = count = 0
        tail = b""
        for chunk in r.iter_raw(1 << 20):
            size += len(chunk)
            buf = tail + chunk
            count += buf.count(delim)
            tail = buf[-(len(delim) - 1):]  # too short to hold a delimiter counted already
    return size, count - 1  # the closing delimiter also starts with --boundary


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ---------------------------------------------------------------------------------------------
# The suite for one server.


class Suite:
    def __init__(self, srv: ManagedServer, data: Data, plan: Plan) -> None:
        self.srv, self.data, self.plan = srv, data, plan
        self.base = srv.dicomweb
        self.out: dict[str, dict[str, Any]] = {}
        t = data.target
        self.series_url = f"{self.base}/studies/{t.study_uid}/series/{t.series_uid}"

    def put(self, key: str, value: float | None, errors: int = 0, **raw: Any) -> None:
        self.out[key] = {"value": value, "errors": errors, **raw}

    def cpu(self) -> tuple[float, float]:
        pg = self.srv.pg_database
        return self.srv.cpu_seconds(), pg_backend_cpu_seconds(pg) if pg else 0.0

    def settle(self, limit: float = 15.0) -> None:
        """Wait, at most ``limit`` s, until server and database use < 5 % of a core.

        Deferred work (an outbox, autovacuum after a bulk load) then counts in the CPU per
        instance of the ingest that caused it, and does not disturb the next measurement.
        """
        deadline = time.monotonic() + limit
        before = sum(self.cpu())
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = sum(self.cpu())
            if now - before < 0.025:
                return
            before = now

    def ingest(self, key: str, rounds: list[list[bytes]], per_request: int, clients: int
               ) -> None:
        rates, cpu_ms, pg_ms, errors = [], [], [], 0
        pg = self.srv.pg_database
        for parts in rounds:
            bodies = [stow_body(parts[i:i + per_request])
                      for i in range(0, len(parts), per_request)]
            cpu0 = self.srv.cpu_seconds()
            with PgCpuMeter(pg) if pg else nullcontext() as meter:
                stored, failed, took = stow_parallel(self.base, bodies, clients)
                self.settle()
            cpu = self.srv.cpu_seconds() - cpu0
            errors += failed
            rates.append(stored / took)
            cpu_ms.append(cpu * 1000 / max(1, stored))
            if meter is not None:
                pg_ms.append(meter.seconds * 1000 / max(1, stored))
            log(f"  {key}: {stored} stored, {failed} failed, {stored / took:.1f} inst/s")
        suffix = key.removeprefix("ingest_")
        self.put(key, statistics.median(rates), errors, samples=rates)
        self.put(f"cpu_{suffix}", statistics.median(cpu_ms), samples=cpu_ms)
        if pg_ms:
            self.put(f"pg_cpu_{suffix}", statistics.median(pg_ms), samples=pg_ms)

    def run_ingest(self) -> None:
        def read(paths: list[str]) -> list[bytes]:
            return [Path(p).read_bytes() for p in paths]

        batch = [read([p for s in r for p in s.paths]) for r in self.data.batch_rounds]
        self.ingest("ingest_batch", batch, BATCH, CLIENTS)
        del batch
        self.ingest("ingest_single", [read(r) for r in self.data.single_rounds], 1, 1)
        self.ingest("ingest_single4", [read(r) for r in self.data.concurrent_rounds], 1,
                    CLIENTS)

    def run_load_small(self) -> None:
        parts = [b for _, b in self.data.small]
        bodies = [stow_body(parts[i:i + SMALL_BATCH]) for i in range(0, len(parts), SMALL_BATCH)]
        stored, failed, took = stow_parallel(self.base, bodies, CLIENTS)
        log(f"  load_small: {stored} stored, {failed} failed, {took:.1f} s")
        self.put("load_small", stored / took, failed, seconds=took)

    def run_qido_patient(self) -> None:
        """Three passes of a third of the requests; medians of their p50 and p95.

        One background burst (a checkpoint, autovacuum) then moves one pass, not the figure.
        """
        studies = Counter(pid for pid, _ in self.data.small)
        pids = random.Random(SEED).choices(sorted(studies), k=self.plan.qido_requests)
        p50s, p95s, all_times, errors = [], [], [], 0
        with new_client() as client:
            for k in range(3):
                chunk = pids[k::3]
                times, errs, answers = timed_gets(
                    client, [f"{self.base}/studies?PatientID={p}" for p in chunk], DICOM_JSON,
                    lambda r: True)
                # Each answer must list exactly the studies that patient has.
                for pid, r in zip(chunk, answers, strict=True):
                    if r is not None and r.status_code == 200 and not json_len(studies[pid])(r):
                        errs += 1
                errors += errs
                all_times += times
                if times:
                    p50s.append(float(np.percentile(times, 50)))
                    p95s.append(float(np.percentile(times, 95)))
        self.put("qido_patient_p50", statistics.median(p50s) if p50s else None, errors,
                 samples=all_times, passes=p50s)
        self.put("qido_patient_p95", statistics.median(p95s) if p95s else None, errors,
                 passes=p95s)

    def run_series_queries(self) -> None:
        n = self.plan.series_requests
        for key, url in (("qido_instances", f"{self.series_url}/instances"),
                         ("metadata", f"{self.series_url}/metadata")):
            with new_client() as client:
                times, errors, _ = timed_gets(client, [url] * n, DICOM_JSON,
                                              json_len(SERIES_SLICES), warmup=1)
            self.put(f"{key}_p50", pct(times, 50), errors, samples=times)
            self.put(f"{key}_p95", pct(times, 95), errors)

    def run_wado(self) -> None:
        paths = self.data.target.paths
        rates, errors, size = [], 0, 0
        with new_client() as client:
            for i in range(self.plan.wado_repeats + 1):  # the first one warms up
                start = time.perf_counter()
                try:
                    size, parts = stream_multipart(client, self.series_url, ACCEPT_SERIES)
                except httpx.HTTPError:
                    size, parts = 0, 0
                took = time.perf_counter() - start
                if parts != SERIES_SLICES:
                    errors += 1
                elif i:
                    rates.append(size / 1e6 / took)
        self.put("wado_series", statistics.median(rates) if rates else None, errors,
                 samples=rates, bytes=size)
        total = sum(len(Path(p).read_bytes()) for p in paths)  # warms the page cache
        disk = []
        for _ in range(self.plan.wado_repeats):
            start = time.perf_counter()
            for p in paths:
                Path(p).read_bytes()
            disk.append(total / 1e6 / (time.perf_counter() - start))
        self.put("disk_read", statistics.median(disk), samples=disk, bytes=total)

    def run_frames(self) -> None:
        sops = self.data.target.sop_uids
        step = max(1, len(sops) // self.plan.frame_requests)
        urls = [f"{self.series_url}/instances/{s}" for s in sops[::step]]
        urls = urls[:self.plan.frame_requests]
        with new_client() as client:
            times, errors, _ = timed_gets(client, [f"{u}/frames/1" for u in urls], ACCEPT_FRAME,
                                          lambda r: len(r.content) >= 512 * 512 * 2)
            self.put("frame_p50", pct(times, 50), errors, samples=times)
            times, errors, _ = timed_gets(client, [f"{u}/rendered" for u in urls], "image/jpeg",
                                          lambda r: r.content[:2] == b"\xff\xd8")
            self.put("rendered_p50", pct(times, 50), errors, samples=times)

    def run(self, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
        phases = [self.run_ingest, self.run_load_small, self.run_qido_patient,
                  self.run_series_queries, self.run_wado, self.run_frames]
        if only:
            phases = [p for p in phases if p.__name__.removeprefix("run_") in only]
        for phase in phases:
            start = time.perf_counter()
            try:
                self.settle()  # measure each phase on an idle server
                phase()
            except Exception as exc:  # one broken phase must not end the whole run
                log(f"  {phase.__name__} failed: {exc!r}")
                self.out.setdefault("phase_errors", {})[phase.__name__] = (
                    traceback.format_exc(limit=3))
            log(f"  {phase.__name__.removeprefix('run_')} took "
                f"{time.perf_counter() - start:.1f} s")
        return self.out


# ---------------------------------------------------------------------------------------------
# Report.


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """One markdown table (rows: index x measurement) and the same rows as dicts."""
    lines = ["| index | measurement | unit | Orthanc | cloudfilm | ratio (>1: cloudfilm better) "
             "| target | met |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for index, servers in results.items():
        for m in METRICS:
            cells = {n: servers[n][m.key] for n in SERVERS if m.key in servers.get(n, {})}
            if not cells:
                continue
            o, c = (cells[n]["value"] if n in cells else None for n in SERVERS)
            ratio = None
            if o and c and m.key != "disk_read":  # the disk read is a reference, not a contest
                ratio = c / o if m.higher_better else o / c
            met = ""
            if m.target:
                kind, x = m.target
                got = ratio if kind == "ratio" else c
                met = "n/a" if got is None else "yes" if (
                    got >= x if kind == "ratio" else got < x) else "NO"
            shown = [fmt(cells[n]["value"]) + (f" ({cells[n]['errors']} err)"
                                               if cells[n]["errors"] else "")
                     if n in cells else "—" for n in SERVERS]
            rows.append({"index": index, "metric": m.key, "orthanc": o, "cloudfilm": c,
                         "ratio": ratio, "target": m.target_text, "met": met})
            lines.append(f"| {index} | {m.label} | {m.unit} | {shown[0]} | {shown[1]} | "
                         f"{fmt(ratio)} | {m.target_text} | {met} |")
    return "\n".join(lines) + "\n", rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~500 instances, 1,000 studies")
    parser.add_argument("--index", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--servers", default="orthanc,cloudfilm",
                        help="comma-separated subset of orthanc,cloudfilm")
    parser.add_argument("--phases", default="",
                        help="comma-separated subset of ingest,load_small,qido_patient,"
                             "series_queries,wado,frames (default: all); the queries need "
                             "the ingest before them")
    parser.add_argument("--pg-prefix", default="bench",
                        help="PostgreSQL databases PREFIX_orthanc and PREFIX_cloudfilm "
                             "(helpers sharing a server use their own names)")
    parser.add_argument("--workers", type=int, default=1,
                        help="cloudfilm serve --workers N (HTTP worker processes)")
    parser.add_argument("--as-hospital", action="store_true",
                        help="cloudfilm is called as a hospital gateway would (Bearer cfh_ "
                             "credential of a registered hospital), not as the loopback "
                             "operator; Orthanc as before")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    indexes = ["sqlite", "postgresql"] if args.index == "both" else [args.index]
    factories: dict[str, Callable[[str], AbstractContextManager[ManagedServer]]] = {
        "orthanc": lambda ix: Orthanc(index=ix, pg_database=f"{args.pg_prefix}_orthanc"),
        "cloudfilm": lambda ix: Cloudfilm(
            index=ix, pg_database=f"{args.pg_prefix}_cloudfilm",
            extra_args=("--workers", str(args.workers)) if args.workers > 1 else ()),
    }
    names = [n for n in SERVERS if n in args.servers.split(",")]
    phases = [p for p in args.phases.split(",") if p]

    started = dt.datetime.now()
    load_before = os.getloadavg()[0]
    data = prepare_data(plan)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for index in indexes:
        results[index] = {}
        for name in names:
            log(f"{name} ({index} index)")
            try:
                with factories[name](index) as srv:
                    if name == "cloudfilm" and args.as_hospital:
                        CLIENT_HEADERS["Authorization"] = f"Bearer {hospital_credential(srv)}"
                    try:
                        out = Suite(srv, data, plan).run(phases)
                    finally:
                        CLIENT_HEADERS.clear()
            except ServerUnavailable as exc:
                log(f"  skipped: {exc}")
                skipped[f"{name}/{index}"] = str(exc)
                continue
            except Exception as exc:  # e.g. a start-up we did not foresee; go on with the rest
                log(f"  skipped after an error: {exc!r}")
                skipped[f"{name}/{index}"] = repr(exc)
                continue
            out["peak_rss"] = {"value": srv.peak_rss / 2**20, "errors": 0}
            out["cpu_total"] = {"value": srv.cpu_total, "errors": 0}
            results[index][name] = out

    md, rows = table(results)
    took = (dt.datetime.now() - started).total_seconds()
    print(md)
    for key, why in skipped.items():
        print(f"skipped {key}: {why.splitlines()[0]}")
    for index, servers in results.items():
        for name, out in servers.items():
            for phase in out.get("phase_errors", {}):
                print(f"{name}/{index}: {phase} failed; its rows are missing (see the JSON)")
    OUT_DIR.mkdir(exist_ok=True)
    stem = OUT_DIR / f"dicomweb-{started:%Y%m%dT%H%M%S}{'-quick' if args.quick else ''}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps({
        "started": started.isoformat(), "seconds": took, "args": vars(args),
        "plan": asdict(plan), "host": host_info(), "load_before": load_before,
        "skipped": skipped,
        "table": rows, "markdown": md, "results": results,
    }, indent=1))
    # Other work on the two cores moves every figure; say how busy the machine was.
    print(f"load average (1 min) before the run {load_before:.2f}; {took:.0f} s; "
          f"wrote {stem}.json and .md")


def host_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "")
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
