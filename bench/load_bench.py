"""Mixed load on one cloudfilm server: STOW-RS, QIDO-RS and WADO-RS from many clients at once.

Starts its own ``cloudfilm serve`` (``server.py``: free loopback ports, empty archive), loads a
few CT studies, then runs ``--clients`` asyncio clients (httpx, one keep-alive connection
each) for ``--duration`` seconds. Each client picks a request type by weight, sends it, checks
the answer and records its latency. Meanwhile the server's resident memory (whole process
tree) is sampled every second: it must stay flat under steady load.

    .venv/bin/python bench/load_bench.py --quick                 # 30 s
    .venv/bin/python bench/load_bench.py --duration 300 --index postgresql
    # the soak of issue 12: 30 min, two workers, a fixed modest rate (well under a core)
    nice -n 10 .venv/bin/python bench/load_bench.py --duration 1800 --index postgresql \
        --workers 2 --rate 8 --clients 4

Reports throughput, p50/p95/p99 per request type, errors (target: zero) and the memory
curve; writes ``bench/out/load-<time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil

from harness import BENCH_DIR
from server import Cloudfilm
from synth import make_ct_series, to_bytes

OUT_DIR = BENCH_DIR / "out"
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Request mix per client pick: a reading-heavy workload with steady ingest, like daytime
# traffic of a regional archive (uploads all day, viewers opening studies).
WEIGHTS = {"stow": 15, "qido-studies": 20, "qido-series": 10, "wado-metadata": 20,
           "wado-frames": 20, "wado-rendered": 15, "rest-hospitals": 4, "rest-audit": 4,
           "portal-page": 4}
SLICE_SIZE = 256  # 128 KiB per CT slice: many requests per second on two cores


@dataclass(slots=True)
class Study:
    uid: str
    series: str
    sops: list[str]
    patient: str


@dataclass(slots=True)
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    memory: list[tuple[float, int]] = field(default_factory=list)

    def record(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if not ok:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind}: {detail}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = f"b{random.getrandbits(64):x}"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def fixed_uid(*parts: object) -> str:
    """A 44-character ``2.25.`` UID: same length for every input, so that a template's UIDs
    can be swapped in its encoded bytes without touching any length field."""
    digest = int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16) % 10**38
    return f"2.25.1{digest:038d}"


def new_study(index: int, slices: int) -> tuple[Study, list[bytes]]:
    patient = f"LOAD{index % 50:04d}"
    study_uid, series_uid = fixed_uid("study", index), fixed_uid("series", index)
    datasets = list(make_ct_series(slices, patient_id=patient, patient_name=f"Load^P{index % 50}",
                                   study_uid=study_uid, series_uid=series_uid,
                                   size=SLICE_SIZE, seed=index))
    for i, ds in enumerate(datasets):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = fixed_uid("sop", index, i)
    study = Study(study_uid, series_uid, [str(ds.SOPInstanceUID) for ds in datasets], patient)
    return study, [to_bytes(ds) for ds in datasets]


class Relabeller:
    """New studies for ingest in microseconds: a template study with its UIDs swapped."""

    def __init__(self, slices: int) -> None:
        self.template, self.parts = new_study(999_999, slices)

    def make(self, index: int) -> tuple[Study, bytes, str]:
        # PatientID has a fixed width too: spread new studies over the 50 load patients, so
        # that no patient's QIDO answer grows much faster than the others'.
        patient = f"LOAD{index % 50:04d}"
        swaps = [(self.template.uid, fixed_uid("study", index)),
                 (self.template.series, fixed_uid("series", index))]
        swaps += [(sop, fixed_uid("sop", index, i)) for i, sop in enumerate(self.template.sops)]
        parts = []
        for part in self.parts:
            part = part.replace(self.template.patient.encode(), patient.encode())
            for old, new in swaps:
                part = part.replace(old.encode(), new.encode())
            parts.append(part)
        body, ctype = multipart(parts)
        study = Study(swaps[0][1], swaps[1][1], [new for _, new in swaps[2:]], patient)
        return study, body, ctype


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Load:
    def __init__(self, base: str, studies: list[Study], stats: Stats, seed: int) -> None:
        self.base = base
        self.root = base.removesuffix("/dicomweb")
        self.studies = studies
        self.stats = stats
        self.rng = random.Random(seed)
        self.next_index = 10_000
        # Every STOW-RS carries a new study: the template is painted once, before the clock
        # starts, so the bench measures the server rather than numpy painting phantoms.
        self.relabeller = Relabeller(4)

    async def one(self, client: httpx.AsyncClient, kind: str) -> None:
        study = self.rng.choice(self.studies)
        sop = self.rng.choice(study.sops)
        instance = f"{self.base}/studies/{study.uid}/series/{study.series}/instances/{sop}"
        started = time.perf_counter()
        ok, detail = True, ""
        try:
            if kind == "stow":  # a new 4-slice study
                self.next_index += 1
                new, body, ctype = self.relabeller.make(self.next_index)
                r = await client.post(f"{self.base}/studies", content=body,
                                      headers={"Content-Type": ctype})
                ok = r.status_code == 200
                if ok:
                    self.studies.append(new)
            elif kind == "qido-studies":
                r = await client.get(f"{self.base}/studies", params={
                    "PatientID": study.patient, "includefield": "all"})
                ok = r.status_code == 200 and any(
                    s["0020000D"]["Value"][0] == study.uid for s in r.json())
            elif kind == "qido-series":
                r = await client.get(f"{self.base}/studies/{study.uid}/series")
                ok = r.status_code == 200 and len(r.json()) >= 1
            elif kind == "wado-metadata":
                r = await client.get(f"{self.base}/studies/{study.uid}/series/{study.series}"
                                     "/metadata")
                ok = r.status_code == 200 and len(r.json()) == len(study.sops)
            elif kind == "wado-frames":
                r = await client.get(f"{instance}/frames/1", headers={"Accept": FRAMES})
                ok = r.status_code == 200 and len(r.content) >= SLICE_SIZE * SLICE_SIZE * 2
            elif kind == "rest-hospitals":  # REST read of the registry
                r = await client.get(f"{self.root}/api/v1/hospitals")
                ok = r.status_code == 200 and isinstance(r.json(), list)
            elif kind == "rest-audit":  # REST read of the audit trail the load itself writes
                r = await client.get(f"{self.root}/api/v1/audit", params={"limit": 20})
                ok = r.status_code == 200 and isinstance(r.json(), list)
            elif kind == "portal-page":  # a rendered portal page (template, i18n, assets)
                r = await client.get(f"{self.root}/portal/signin")
                ok = r.status_code == 200 and "<html" in r.text.lower()
            else:
                r = await client.get(f"{instance}/rendered", params={"window": "40,400"},
                                     headers={"Accept": "image/jpeg"})
                ok = r.status_code == 200 and r.content[:2] == b"\xff\xd8"
            if not ok:
                detail = f"{r.status_code} {r.text[:120]!r}"
        except httpx.HTTPError as exc:
            ok, detail = False, repr(exc)
        self.stats.record(kind, time.perf_counter() - started, ok, detail)

    async def client(self, deadline: float, interval: float = 0.0) -> None:
        """Requests back to back, or one every ``interval`` seconds (a fixed rate: a request
        that overruns its slot starts the next one at once, none are skipped)."""
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        async with httpx.AsyncClient(timeout=60) as client:
            due = time.monotonic() + self.rng.uniform(0, interval)
            while time.monotonic() < deadline:
                if interval:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    due += interval
                await self.one(client, self.rng.choices(kinds, weights)[0])


async def sample_memory(pid: int, stats: Stats, deadline: float) -> None:
    proc = psutil.Process(pid)
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss
                                               for c in proc.children(recursive=True))
        except psutil.Error:
            return
        stats.memory.append((time.monotonic() - started, rss))
        await asyncio.sleep(1.0)


def slope_mib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of the second half of the memory curve (after warm-up)."""
    half = points[len(points) // 2:]
    if len(half) < 3:
        return 0.0
    xs, ys = [p[0] for p in half], [p[1] / 2**20 for p in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 60


def report(stats: Stats, seconds: float, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    rows, lines = [], []
    rate = f"{args.rate:g}/s fixed" if args.rate else "as fast as answered"
    lines.append(f"cloudfilm load: {args.clients} clients ({rate}), {seconds:.0f} s, "
                 f"index {args.index}, {args.workers} worker(s), "
                 f"CT slices {SLICE_SIZE}x{SLICE_SIZE}")
    lines.append("")
    lines.append("| request | count | per s | p50 ms | p95 ms | p99 ms | errors |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    total = errors = 0
    for kind in WEIGHTS:
        values = stats.latencies.get(kind, [])
        if not values:
            continue
        row = {"request": kind, "count": len(values), "per_s": len(values) / seconds,
               "p50_ms": pct(values, 50) * 1000, "p95_ms": pct(values, 95) * 1000,
               "p99_ms": pct(values, 99) * 1000, "errors": stats.errors.get(kind, 0)}
        rows.append(row)
        total += len(values)
        errors += row["errors"]
        lines.append(f"| {kind} | {row['count']} | {row['per_s']:.1f} | {row['p50_ms']:.1f} | "
                     f"{row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |")
    lines.append(f"| **all** | {total} | {total / seconds:.1f} | | | | {errors} |")
    mem = [m / 2**20 for _, m in stats.memory]
    slope = slope_mib_per_min(stats.memory)
    if mem:
        lines.append("")
        lines.append(f"server RSS (MiB): start {mem[0]:.0f}, peak {max(mem):.0f}, end {mem[-1]:.0f}"
                     f"; second-half slope {slope:+.1f} MiB/min over {len(mem)} samples")
    for sample in stats.error_samples:
        lines.append(f"- error: {sample}")
    return "\n".join(lines), {"rows": rows, "errors": errors, "memory_mib": mem,
                              "slope_mib_per_min": slope, "error_samples": stats.error_samples}


async def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    stats = Stats()
    extra = ("--workers", str(args.workers)) if args.workers > 1 else ()
    server = Cloudfilm(index=args.index, pg_database="scale_load", extra_args=extra)
    server.startup_timeout = 240.0  # workers start slowly on a shared, busy machine
    with server as srv:
        log(f"server up at {srv.dicomweb}; loading {args.studies} studies of {args.slices} slices")
        studies = []
        async with httpx.AsyncClient(timeout=120) as client:
            for k in range(args.studies):
                study, parts = new_study(k, args.slices)
                body, ctype = multipart(parts)
                r = await client.post(f"{srv.dicomweb}/studies", content=body,
                                      headers={"Content-Type": ctype})
                r.raise_for_status()
                studies.append(study)
        load = Load(srv.dicomweb, studies, stats, args.seed)
        log(f"{args.clients} clients for {args.duration:.0f} s")
        assert srv.proc is not None
        started = time.monotonic()
        deadline = started + args.duration
        interval = args.clients / args.rate if args.rate else 0.0
        await asyncio.gather(sample_memory(srv.proc.pid, stats, deadline),
                             *(load.client(deadline, interval) for _ in range(args.clients)))
        seconds = time.monotonic() - started
    text, data = report(stats, seconds, args)
    data["peak_rss_mib_vmhwm"] = srv.peak_rss / 2**20
    return text, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s instead of --duration")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--index", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--studies", type=int, default=8, help="studies loaded before the run")
    parser.add_argument("--slices", type=int, default=40, help="slices per loaded study")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second over all clients (0: as fast as answered)")
    parser.add_argument("--workers", type=int, default=1, help="cloudfilm serve --workers")
    args = parser.parse_args()
    if args.quick:
        args.duration = 30.0
    text, data = asyncio.run(run(args))
    print(text)
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + ("-quick" if args.quick else "")
    (OUT_DIR / f"load-{stamp}.md").write_text(text + "\n")
    (OUT_DIR / f"load-{stamp}.json").write_text(json.dumps({"args": vars(args), **data},
                                                           indent=1))
    sys.exit(1 if data["errors"] else 0)


if __name__ == "__main__":
    main()
