"""Does lossless re-encoding keep up with ingest on 2 cores? (issue 16, storage_bench part 4)

Every figure goes through the platform's real doors and the real job system, each phase on
a fresh archive (PostgreSQL index ``bench_cloudfilm`` and a blob folder) with the same
synthetic CT slices (bench/synth.py, 512x512, 16-bit, cached in bench/work/storage):

1. **ingest alone**: ``cloudfilm serve --workers 2`` with compression on and no job
   workers (``jobs.workers=0``): half the slices by batched STOW-RS (``--stow-batch``
   objects per request, ``--stow-clients`` concurrent clients), the other half by C-STORE
   (dcmtk ``storescu``, 4 associations). Objects/s and server CPU per object: the
   server's process tree plus the PostgreSQL backends of its database.
2. **re-encoding alone**: the server stopped, ``cloudfilm jobs worker --workers 2`` on the
   backlog of phase 1 (every slice): objects/s from the first finished job to the last,
   and CPU per object (worker processes and relay, plus the PostgreSQL backends).
3. **both at once**: a fresh archive, ``serve --workers 2`` with its 2 job workers
   (``jobs.workers=2``, niced as configured), every slice by STOW at full speed: the ingest
   rate next to phase 1's, the jobs done while ingest ran, and the time to drain the rest.
4. **paced**: the same with STOW paced at the rate both fit in 2 cores (from the CPU per
   object of phases 1 and 2, 90 % of it): does the backlog stay bounded?

The load average (``/proc/loadavg``) is read before and after each phase.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness import WORK_DIR, PgCpuMeter, cpu_seconds
from server import EXE, Cloudfilm
from synth import write_ct_study

ENV = {**os.environ, "TCP_NODELAY": "1"}
SCU_AE = "KEEPUPSCU"
SERIES = 250
# CLOUDFILM_BENCH_PG_DB: a database of your own when several people run benches here.
PG_DB = os.environ.get("CLOUDFILM_BENCH_PG_DB", "bench_cloudfilm")
PG_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"
JPEG_LS = "1.2.840.10008.1.2.4.80"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def slices(n: int) -> list[Path]:
    """``n`` synthetic CT slices in series of up to 250, at least two series (the STOW
    half and the C-STORE half must not share a study: a study held by another sender's
    hospital goes to reconciliation). Cached between runs."""
    size = min(SERIES, max(1, n // 2))
    root = WORK_DIR / "storage" / "keepup"
    out: list[Path] = []
    for k in range((n + size - 1) // size):
        folder = root / f"ct{size}-{k:03d}"
        paths = sorted(folder.glob("*.dcm"))
        if len(paths) != size:
            log(f"generating {folder.name}")
            paths = write_ct_study(folder, size, patient_id=f"KEEP{size}-{k:04d}",
                                   patient_name=f"Keep^Up{k}", seed=100 + k)
        out.extend(paths)
    return out[:n]


class _Server(Cloudfilm):
    """cloudfilm on PostgreSQL that remembers its environment (the job worker and the
    ``peers`` command need the same database and secrets)."""

    startup_timeout = 240.0  # two HTTP workers each build their services

    def __init__(self, jobs_workers: int, syntax: str = JPEG_LS) -> None:
        super().__init__(index="postgresql", pg_database=PG_DB,
                         extra_args=("--workers", "2", "--ae-title", "CLOUDFILM"), keep=True)
        self.extra = {"CLOUDFILM_STORAGE__COMPRESS": "true",
                      "CLOUDFILM_STORAGE__COMPRESS_DEFAULT": syntax,
                      "CLOUDFILM_STORAGE__DELETE_GRACE_SECONDS": "0",
                      "CLOUDFILM_JOBS__WORKERS": str(jobs_workers),
                      "CLOUDFILM_JOBS__RELAY_SECONDS": "0.5"}
        self.env: dict[str, str] = {}

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().prepare()
        env.update(self.extra)
        self.env = {**ENV, **env, "CLOUDFILM_DATA_DIR": str(self.workdir / "data")}
        return argv, env

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _job_counts() -> dict[str, int]:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}",
                         autocommit=True) as conn:
        rows = conn.execute("SELECT state, count(*) FROM storage_job GROUP BY state")
        return {state: int(n) for state, n in rows.fetchall()}


def _finished(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in ("done", "left", "dead"))


def _bodies(files: list[Path], batch: int) -> list[tuple[bytes, str]]:
    out = []
    for i in range(0, len(files), batch):
        boundary = f"b{random.getrandbits(64):x}"
        body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom"
                        b"\r\n\r\n" + p.read_bytes() + b"\r\n" for p in files[i:i + batch])
        out.append((body + b"--" + boundary.encode() + b"--\r\n",
                    f'multipart/related; type="application/dicom"; boundary={boundary}'))
    return out


def stow(url: str, bodies: list[tuple[bytes, str]], clients: int,
         rate: float | None = None, batch: int = 1) -> float:
    """POST every body (``clients`` threads); paced to ``rate`` objects/s when given.
    Returns the wall seconds."""
    todo = list(enumerate(bodies))
    lock = threading.Lock()
    started = time.perf_counter()
    errors: list[str] = []

    def run() -> None:
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    index, (body, ctype) = todo.pop(0)
                if rate:  # open loop: request i leaves at i * batch / rate
                    wait = started + index * batch / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                r = client.post(f"{url}/studies", content=body,
                                headers={"Content-Type": ctype, "Accept": "application/json"})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"STOW failed: {errors[0]}")
    return time.perf_counter() - started


def store(port: int, files: list[Path], assocs: int = 4) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", SCU_AE, "-aec", "CLOUDFILM", "127.0.0.1",
                               str(port), *map(str, files[i::assocs])], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(assocs)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def _wait_jobs(total: int, timeout: float, pid: int | None = None,
               pg: PgCpuMeter | None = None) -> dict[str, Any]:
    """Poll the job table until ``total`` jobs are finished: seconds from now, and from the
    first finished job on (worker start-up excluded) the steady rate and, with ``pid``, the
    CPU per object of that process tree (and of the database backends, with ``pg``)."""
    started = time.perf_counter()
    first: tuple[float, int, float, float] | None = None
    done = 0
    while time.perf_counter() - started < timeout:
        done = _finished(_job_counts())
        if first is None and done:
            first = (time.perf_counter(), done, _tree_cpu(pid) if pid else 0.0,
                     pg.seconds if pg else 0.0)
        if done >= total:
            break
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"done": done, "seconds": seconds}
    if first is not None and done > first[1]:
        n = done - first[1]
        out["objects_per_second_steady"] = n / (time.perf_counter() - first[0])
        if pid:
            out["cpu_ms_per_object"] = (_tree_cpu(pid) - first[2]) * 1000 / n
        if pg:
            out["pg_cpu_ms_per_object"] = (pg.seconds - first[3]) * 1000 / n
    return out


def _tree_cpu(pid: int) -> float:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        kids = []
    return cpu_seconds(pid) + sum(cpu_seconds(k.pid) for k in kids)


def _peers_add(srv: _Server) -> None:
    subprocess.run([str(EXE), "peers", "add", SCU_AE, "127.0.0.1", "104", "--hospital",
                    "BENCH"], check=True, capture_output=True, env=srv.env)


def _ingest_alone(srv: _Server, objects: int, send: Callable[[], float]) -> dict[str, Any]:
    """Rate and CPU (server tree and PostgreSQL) of one door's ``send``, which returns its
    wall time."""
    load0 = loadavg()
    with PgCpuMeter(PG_DB) as pg:
        cpu0 = srv.cpu_seconds()
        wall = send()
        cpu = srv.cpu_seconds() - cpu0
    return {"objects_per_second": objects / wall,
            "server_cpu_ms_per_object": cpu * 1000 / objects,
            "pg_cpu_ms_per_object": pg.seconds * 1000 / objects,
            "load": f"{load0} -> {loadavg()}"}


def keep_up(n: int, *, stow_batch: int = 50, stow_clients: int = 2,
            paced_seconds: float = 30.0, syntax: str = JPEG_LS,
            both: bool = True) -> dict[str, Any]:
    """Phases 1-4 (``both=False``: 1 and 2 only) with ``syntax`` as the policy's target."""
    files = slices(n)
    half = n // 2  # whole series: n a multiple of 500 (or below 500)
    bodies = _bodies(files[:half], stow_batch)
    out: dict[str, Any] = {"objects": n, "stow_batch": stow_batch, "stow_clients": stow_clients,
                           "syntax": syntax}

    # 1. ingest alone (no job workers), then 2. re-encoding alone on its backlog.
    srv = _Server(jobs_workers=0, syntax=syntax)
    try:
        with srv:
            _peers_add(srv)
            out["stow"] = _ingest_alone(
                srv, half, lambda: stow(srv.dicomweb, bodies, stow_clients))
            log(f"STOW alone: {out['stow']}")
            out["c_store"] = _ingest_alone(
                srv, n - half, lambda: store(srv.dicom_port, files[half:]))
            log(f"C-STORE alone: {out['c_store']}")
            pending = _job_counts()
            for _ in range(120):  # C-STORE's last objects may still be committing
                if sum(pending.values()) >= n:
                    break
                time.sleep(0.5)
                pending = _job_counts()
        if sum(pending.values()) != n:
            raise RuntimeError(f"expected {n} jobs in the outbox, found {pending}")
        load0 = loadavg()
        env = {**srv.env, "CLOUDFILM_AUTO_MIGRATE": "false"}
        with PgCpuMeter(PG_DB) as pg:
            worker = subprocess.Popen([str(EXE), "jobs", "worker", "--workers", "2"], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                waited = _wait_jobs(n, timeout=600, pid=worker.pid, pg=pg)
            finally:
                os.killpg(worker.pid, 15)
                worker.wait(timeout=60)
        counts = _job_counts()
        out["reencode"] = {**waited, "states": counts, "load": f"{load0} -> {loadavg()}"}
        log(f"re-encoding alone: {out['reencode']}")
    finally:
        srv.cleanup()

    ingest_ms = (out["stow"]["server_cpu_ms_per_object"] + out["stow"]["pg_cpu_ms_per_object"])
    reencode_ms = (out["reencode"]["cpu_ms_per_object"]
                   + out["reencode"]["pg_cpu_ms_per_object"])
    # Both fit in 2 cores while rate * (ingest + re-encoding CPU per object) <= 2 s/s.
    out["keep_up_rate_2_cores"] = 2000 / (ingest_ms + reencode_ms)
    out["reencode_share_of_cpu"] = reencode_ms / (ingest_ms + reencode_ms)
    # The province's ~350 objects/s on average (30 M a day) spread over the cluster.
    out["province_cores"] = {"ingest": 350 * ingest_ms / 1000,
                             "reencode": 350 * reencode_ms / 1000}
    if not both:
        return out

    # 3. both at once at full speed, 4. paced at the rate both fit.
    all_bodies = _bodies(files, stow_batch)
    warm_files = write_ct_study(WORK_DIR / "storage" / "keepup" / "warm", 10,
                                patient_id="KEEPWARM", patient_name="Keep^Warm", seed=7)
    warm = _bodies(warm_files, 10)
    for label, rate in (("both_full_speed", None),
                        ("both_paced", 0.9 * out["keep_up_rate_2_cores"])):
        srv = _Server(jobs_workers=2, syntax=syntax)
        try:
            with srv:
                # A warm-up study first, its jobs done: the job workers are up and running.
                stow(srv.dicomweb, warm, 1)
                _wait_jobs(len(warm_files), timeout=600)
                load0 = loadavg()
                count = n if rate is None else min(n, int(rate * paced_seconds))
                bodies_now = all_bodies[:max(1, count // stow_batch)]
                count = min(n, len(bodies_now) * stow_batch)
                wall = stow(srv.dicomweb, bodies_now, stow_clients, rate=rate,
                            batch=stow_batch)
                finished = _finished(_job_counts()) - len(warm_files)
                drained = _wait_jobs(count + len(warm_files), timeout=600)
                row = {"objects": count, "ingest_objects_per_second": count / wall,
                       "paced_at": rate, "jobs_finished_when_ingest_ended": finished,
                       "backlog_when_ingest_ended": count - finished,
                       "drain_seconds_after_ingest": drained["seconds"],
                       "load": f"{load0} -> {loadavg()}"}
                out[label] = row
                log(f"{label}: {row}")
        finally:
            srv.cleanup()
    return out


def print_keep_up(r: dict[str, Any]) -> None:
    s, c, e = r["stow"], r["c_store"], r["reencode"]
    print(f"\n### Keep-up on this machine (2 cores, PostgreSQL, `serve --workers 2`, "
          f"2 job workers, target {r.get('syntax', JPEG_LS)})\n")
    print("| phase | objects/s | CPU ms per object (process + PostgreSQL) | load |\n"
          "|---|---:|---:|---|")
    for name, row, cpu, pg in (
            (f"STOW alone (batches of {r['stow_batch']}, {r['stow_clients']} clients)", s,
             s["server_cpu_ms_per_object"], s["pg_cpu_ms_per_object"]),
            ("C-STORE alone (4 associations)", c, c["server_cpu_ms_per_object"],
             c["pg_cpu_ms_per_object"])):
        print(f"| {name} | {row['objects_per_second']:.0f} | {cpu:.1f} + {pg:.1f} "
              f"| {row['load']} |")
    steady = e["objects_per_second_steady"] or 0
    print(f"| re-encoding alone (2 job workers) | {steady:.0f} | {e['cpu_ms_per_object']:.1f} "
          f"+ {e['pg_cpu_ms_per_object']:.1f} | {e['load']} |")
    for key in ("both_full_speed", "both_paced"):
        b = r.get(key)
        if b:
            paced = f" paced at {b['paced_at']:.0f}/s" if b["paced_at"] else ""
            print(f"| both, STOW{paced} | ingest {b['ingest_objects_per_second']:.0f}; "
                  f"backlog {b['backlog_when_ingest_ended']} of {b['objects']} at its end, "
                  f"drained {b['drain_seconds_after_ingest']:.1f} s later | | {b['load']} |")
    p = r["province_cores"]
    print(f"\nBoth fit in 2 cores up to **{r['keep_up_rate_2_cores']:.0f} objects/s** of STOW "
          f"ingest; re-encoding is {100 * r['reencode_share_of_cpu']:.0f} % of that CPU. "
          f"Province average (350 objects/s): {p['ingest']:.1f} cores of ingest + "
          f"{p['reencode']:.1f} cores of re-encoding.")
