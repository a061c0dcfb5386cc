"""Throughput against the number of `cloudfilm serve` processes behind nginx.

    python bench/deploy_bench.py [--processes 1,2] [--rounds 3]

The deployment of docs/deployment.md: N processes on one PostgreSQL index (database
``stow_deploy_bench``, recreated) and one blob folder they share, nginx in front with
deploy/nginx/cloudfilm.conf (its upstream lists rewritten to the N processes). For each N:
STOW-RS of 300-slice CT series (50 instances per request, 4 clients) and QIDO-RS
``studies?PatientID=`` (4 clients), both through nginx; medians of the rounds, with the
CPU per instance of the cloudfilm processes and of PostgreSQL. Needs nginx and its stream
module (apt-get install nginx libnginx-mod-stream). Prints a markdown table and writes it
with the raw numbers to bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from harness import (
    BENCH_DIR,
    WORK_DIR,
    cpu_seconds,
    free_port,
    pg_backend_cpu_seconds,
    recreate_pg_database,
)
from synth import make_ct_series, to_bytes

EXE = BENCH_DIR.parent / ".venv" / "bin" / "cloudfilm"
CONFIG = BENCH_DIR.parent / "deploy" / "nginx" / "cloudfilm.conf"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
DATABASE = "stow_deploy_bench"
PER_REQUEST, CLIENTS, SLICES, QIDO_REQUESTS = 50, 4, 300, 400
ADMIN_TOKEN = "deploy-bench-admin-token"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def render(http: list[int], dimse: list[int], listen: int, dimse_listen: int,
           folder: Path) -> str:
    text = CONFIG.read_text()
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in http)
    text = re.sub(r"(upstream cloudfilm_http \{\n(?:.*\n)*?)((?:\s*server .*\n)+)",
                  lambda m: m.group(1) + servers, text, count=1)
    streams = "".join(f"        server 127.0.0.1:{p};\n" for p in dimse)
    text = re.sub(r"(upstream cloudfilm_dimse \{\n(?:.*\n)*?)((?:\s*server .*\n)+)",
                  lambda m: m.group(1) + streams, text, count=1)
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    text = text.replace("listen 11112;", f"listen 127.0.0.1:{dimse_listen};")
    text = re.sub(r"^include /etc/nginx/modules-enabled/.*$", f"load_module {STREAM_MODULE};",
                  text, flags=re.M)
    text = re.sub(r"^user .*;$", "user root;" if os.geteuid() == 0 else "", text, flags=re.M)
    text = re.sub(r"^pid .*;$", f"pid {folder / 'nginx.pid'};", text, flags=re.M)
    text = re.sub(r"^error_log .*;$", f"error_log {folder / 'error.log'} warn;", text,
                  flags=re.M)
    return re.sub(r"(client_body|proxy)_temp_path .*;",
                  lambda m: f"{m.group(1)}_temp_path {folder / m.group(1)};", text)


class Deployment(contextlib.AbstractContextManager["Deployment"]):
    """N processes + nginx, each child in its own session, killed by process group."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.folder = Path(tempfile.mkdtemp(prefix=f"deploy{n}-", dir=WORK_DIR))
        self.children: list[subprocess.Popen[bytes]] = []

    def _start(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as out:
            child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(child)
        return child

    def __enter__(self) -> Deployment:
        recreate_pg_database(DATABASE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
        env.update({
            "TCP_NODELAY": "1",
            "CLOUDFILM_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
            "CLOUDFILM_STORAGE_URL": str(self.folder / "blobs"),
            "CLOUDFILM_JOBS__WORKERS": "0",
            "CLOUDFILM_STATS__ROLLUP_MINUTES": "0",
            "CLOUDFILM_HTTP__TRUSTED_PROXIES": '["127.0.0.1"]',
            "CLOUDFILM_SECURITY__NATIONAL_ID_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "CLOUDFILM_SECURITY__NATIONAL_ID_HMAC_KEY":
                "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
            "CLOUDFILM_SECURITY__ADMIN_TOKEN": ADMIN_TOKEN,
        })
        http = [free_port() for _ in range(self.n)]
        dimse = [free_port() for _ in range(self.n)]
        listen, dimse_listen = free_port(), free_port()
        for i in range(self.n):
            # The first migrates; the others start once it is up.
            node_env = {**env, "CLOUDFILM_AUTO_MIGRATE": "true" if i == 0 else "false"}
            self._start([str(EXE), "serve", "--data", str(self.folder / f"node{i}"),
                         "--host", "127.0.0.1", "--port", str(http[i]),
                         "--dicom-host", "127.0.0.1", "--dicom-port", str(dimse[i])],
                        node_env, f"node{i}")
            if i == 0:
                self._wait(f"http://127.0.0.1:{http[0]}/healthz")
        for port in http[1:]:
            self._wait(f"http://127.0.0.1:{port}/healthz")
        conf = self.folder / "nginx.conf"
        conf.write_text(render(http, dimse, listen, dimse_listen, self.folder))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._start([nginx, "-p", str(self.folder), "-c", str(conf), "-g", "daemon off;"],
                    env, "nginx")
        self.base = f"http://127.0.0.1:{listen}"
        self._wait(f"{self.base}/healthz")
        return self

    def _wait(self, url: str, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            if any(c.poll() is not None for c in self.children):
                break
            time.sleep(0.3)
        raise RuntimeError(f"{url} never answered; logs in {self.folder}")

    def cpu(self) -> float:
        """CPU seconds of the cloudfilm processes and their children (not nginx)."""
        total = 0.0
        for child in self.children[:self.n]:
            with contextlib.suppress(OSError):
                total += cpu_seconds(child.pid)
        return total

    def __exit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def bodies(series: list[list[bytes]]) -> list[tuple[str, bytes, int]]:
    out = []
    for parts in series:
        for i in range(0, len(parts), PER_REQUEST):
            chunk = parts[i:i + PER_REQUEST]
            boundary = f"bench-{os.urandom(8).hex()}"
            head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body = b"".join(c for p in chunk for c in (head, p, b"\r\n"))
            body += f"--{boundary}--\r\n".encode()
            out.append((f'multipart/related; type="application/dicom"; boundary={boundary}',
                        body, len(chunk)))
    return out


def parallel(work: list[Any], call: Any) -> tuple[int, float]:
    """Run ``call(client, item)`` over ``work`` from CLIENTS threads; (good, seconds)."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for item in work:
        q.put(item)
    good = [0] * CLIENTS

    def worker(k: int) -> None:
        # A new connection per client, so that nginx spreads them over the processes.
        with httpx.Client(timeout=120, headers={"Accept-Encoding": "identity"}) as client:
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    return
                with contextlib.suppress(httpx.HTTPError):
                    good[k] += call(client, item)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(good), time.perf_counter() - start


def measure(n: int, rounds: list[list[list[bytes]]]) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    out: dict[str, Any] = {"stow": [], "stow_cpu_ms": [], "stow_pg_ms": [], "qido": [],
                           "qido_cpu_ms": []}
    with Deployment(n) as dep:
        # Uploads come from a hospital system (administrators read, they do not upload).
        httpx.post(f"{dep.base}/api/v1/hospitals", headers=admin, timeout=60, json={
            "code": "BENCH", "name": "Bench hospital", "level": "tertiary"}).raise_for_status()
        feed = {"Authorization": "Bearer " + httpx.post(
            f"{dep.base}/api/v1/hospitals/BENCH/credentials", headers=admin, json={},
            timeout=60).json()["token"]}

        def stow(client: httpx.Client, item: tuple[str, bytes, int]) -> int:
            ctype, body, count = item
            r = client.post(f"{dep.base}/dicomweb/studies", content=body,
                            headers={"Content-Type": ctype, **feed})
            return count if r.status_code == 200 else 0

        def qido(client: httpx.Client, pid: str) -> int:
            r = client.get(f"{dep.base}/dicomweb/studies", params={"PatientID": pid},
                           headers={"Accept": "application/dicom+json", **admin})
            return 1 if r.status_code == 200 and len(r.json()) == 1 else 0

        stow(httpx.Client(timeout=120), bodies([rounds[0][0][:2]])[0])  # warm-up
        pids = []
        for k, series in enumerate(rounds):
            work = bodies(series)
            cpu0, pg0 = dep.cpu(), pg_backend_cpu_seconds(DATABASE)
            stored, took = parallel(work, stow)
            cpu, pg = dep.cpu() - cpu0, pg_backend_cpu_seconds(DATABASE) - pg0
            out["stow"].append(stored / took)
            out["stow_cpu_ms"].append(cpu * 1000 / max(1, stored))
            out["stow_pg_ms"].append(pg * 1000 / max(1, stored))
            log(f"  {n} process(es), round {k}: STOW {stored / took:.1f} inst/s, "
                f"{cpu * 1000 / max(1, stored):.1f} ms CPU/inst")
            pids += [f"DB{k:02d}{j:03d}" for j in range(len(series))]
        for _ in range(len(rounds)):
            work = [pids[i % len(pids)] for i in range(QIDO_REQUESTS)]
            cpu0 = dep.cpu()
            good, took = parallel(work, qido)
            out["qido"].append(good / took)
            out["qido_cpu_ms"].append((dep.cpu() - cpu0) * 1000 / max(1, good))
            log(f"  {n} process(es): QIDO {good / took:.1f} req/s ({good} good)")
    return {**out, **{f"{k}_median": statistics.median(v) for k, v in out.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--series-per-round", type=int, default=2)
    parser.add_argument("--slices", type=int, default=SLICES, help="instances per series")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    started = dt.datetime.now()
    load = os.getloadavg()[0]
    log("generating data ...")
    rounds = []
    for k in range(args.rounds):
        rounds.append([[to_bytes(ds) for ds in make_ct_series(
            args.slices, seed=1000 + k * 10 + j, patient_id=f"DB{k:02d}{j:03d}",
            patient_name=f"Bench^{k}{j}")] for j in range(args.series_per_round)])
    results = {}
    for n in (int(x) for x in args.processes.split(",")):
        log(f"{n} process(es)")
        results[n] = measure(n, rounds)
    lines = ["| processes | STOW inst/s (50/request, 4 clients) | cloudfilm CPU ms/inst | "
             "PostgreSQL CPU ms/inst | QIDO studies?PatientID= req/s (4 clients) | "
             "cloudfilm CPU ms/request |", "|---|---|---|---|---|---|"]
    for n, r in results.items():
        lines.append(f"| {n} | {r['stow_median']:.0f} | {r['stow_cpu_ms_median']:.1f} | "
                     f"{r['stow_pg_ms_median']:.1f} | {r['qido_median']:.0f} | "
                     f"{r['qido_cpu_ms_median']:.1f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    print(f"load average (1 min) before the run {load:.2f}")
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stem = out / f"deploy-{started:%Y%m%dT%H%M%S}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps(
        {"started": started.isoformat(), "args": vars(args), "load_before": load,
         "results": results, "markdown": md}, indent=1))


if __name__ == "__main__":
    main()
