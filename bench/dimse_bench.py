"""DIMSE benchmark: cloudfilm against Orthanc's DICOM server, in the same run.

Measures, with TCP_NODELAY=1 on every side (BENCHMARKING.md):

* C-STORE ingest of synthetic 512x512 CT with dcmtk ``storescu`` over 1 and 4
  simultaneous associations (instances/s, server CPU ms per instance);
* C-FIND study level over one open association (pynetdicom SCU), p50/p95 ms;
* C-MOVE of a 300-instance series to a dcmtk ``storescp`` (seconds, instances/s);
* C-GET of the same series with dcmtk ``getscu`` (seconds).

``--processes 1,2`` also runs cloudfilm with that many DIMSE listener processes sharing the
port (``CLOUDFILM_DIMSE__PROCESSES``); each becomes a column. ``--associations 1,2,4`` sets the
C-STORE rounds (the instances are split between them). ``--index sqlite,postgresql`` runs
both servers on each index (Orthanc's PostgreSQL index plugin, Debian
``orthanc-postgresql``); ``--pg-prefix NAME_`` prefixes the databases it (re)creates.

Both servers fsync each object. Run
``.venv/bin/python bench/dimse_bench.py [--instances 2000] [--repeats 3]``; the Markdown
table goes to stdout and ``bench/out/dimse-*.md``. ``--retrieve-only N`` stores only the
series to move and runs N C-MOVE/C-GET rounds per server start (a short bench-lock hold);
``--find-only N`` stores five instances per series and runs N rounds of 200 C-FINDs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, WORK_DIR, free_port, pg_backend_cpu_seconds
from orthanc import Orthanc
from server import EXE, Cloudfilm
from synth import write_ct_study

ENV = {**os.environ, "TCP_NODELAY": "1"}
SCU_AE = "BENCHSCU"
DEST_AE = "BENCHDEST"
SERIES = 250
MOVE_SERIES = 300
FIND_ONLY_INSTANCES = 5  # per series, with --find-only


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(instances: int) -> tuple[list[list[Path]], list[Path]]:
    """Series of synthetic CT (cached in bench/work), plus one 300-slice series to move."""
    root = WORK_DIR / f"dimse-data-{instances}"
    n_series = max(1, instances // SERIES)
    series = []
    for k in range(n_series):
        folder = root / f"ct-{k:03d}"
        paths = sorted(folder.glob("*.dcm"))
        if len(paths) != SERIES:
            log(f"generating {folder.name} ({SERIES} slices)")
            paths = write_ct_study(folder, SERIES, patient_id=f"DIMSE{k:04d}",
                                   patient_name=f"Bench^Patient{k}", seed=k)
        series.append(paths)
    folder = root / "move"
    move = sorted(folder.glob("*.dcm"))
    if len(move) != MOVE_SERIES:
        log("generating the 300-slice series to move")
        move = write_ct_study(folder, MOVE_SERIES, patient_id="DIMSEMOVE",
                              patient_name="Bench^Move", seed=999)
    return series, move


def storescu(port: int, aec: str, files: list[Path]) -> None:
    subprocess.run(["storescu", "-aet", SCU_AE, "-aec", aec, "127.0.0.1", str(port),
                    *map(str, files)], env=ENV, check=True, capture_output=True)


def store_rate(srv: Any, port: int, aec: str, files: list[Path], assocs: int,
               database: str | None = None) -> dict[str, float]:
    groups = [files[i::assocs] for i in range(assocs)]
    cpu0 = srv.cpu_seconds()
    db0 = pg_backend_cpu_seconds(database) if database else 0.0
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", SCU_AE, "-aec", aec, "127.0.0.1", str(port),
                               *map(str, g)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for g in groups]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    wall = time.perf_counter() - start
    cpu = srv.cpu_seconds() - cpu0
    # PostgreSQL's backends for the connections open at the end (a pool keeps them).
    db = pg_backend_cpu_seconds(database) - db0 if database else 0.0
    return {"rate": len(files) / wall, "cpu_ms": cpu * 1000 / len(files),
            "db_cpu_ms": db * 1000 / len(files)}


def find_latency(port: int, aec: str, patient_ids: list[str], n: int = 200) -> dict[str, float]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    def nodelay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title=SCU_AE)
    ae.dimse_timeout = 10
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=aec,
                         evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    assert assoc.is_established, "C-FIND association refused"
    times = []
    for i in range(n):
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientID = patient_ids[i % len(patient_ids)]
        ident.StudyInstanceUID = ""
        ident.PatientName = ""
        ident.StudyDate = ""
        ident.ModalitiesInStudy = ""
        ident.NumberOfStudyRelatedInstances = ""
        start = time.perf_counter()
        rsps = list(assoc.send_c_find(ident, FIND))
        times.append((time.perf_counter() - start) * 1000)
        assert "Status" in rsps[-1][0], f"no C-FIND response for query {i}"
    assert rsps[-1][0].Status == 0 and len(rsps) == 2, rsps[-1][0]
    assoc.release()
    times = times[10:]  # warm-up
    return {"p50": statistics.median(times),
            "p95": statistics.quantiles(times, n=20)[18]}


def _failure(exc: Exception) -> str:
    """The exception, with the tail of a failed tool's output (movescu says why)."""
    if isinstance(exc, subprocess.CalledProcessError):
        out = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        return f"{exc!r}: " + " | ".join(out[-4:])
    return repr(exc)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _wait_for_listeners(srv: Any, processes: int, timeout: float = 120.0) -> None:
    """Until every DIMSE listener process logged that it listens: a sibling still starting
    (imports, services: seconds of CPU) would otherwise run during the first rounds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = srv.log_path.read_text(errors="replace")
        if text.count("cloudfilm.dimse.listening") >= processes:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{processes} DIMSE listeners did not start:\n{srv.log_tail(30)}")


def move_time(port: int, aec: str, study_uid: str, dest_port: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="dimse-dest-", dir=WORK_DIR))
    dest = subprocess.Popen(["storescp", "-aet", DEST_AE, "-od", str(out), "+xa", "+B",
                             str(dest_port)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(dest_port)  # a fixed sleep lost the race under load (movescu exit 67)
        start = time.perf_counter()
        subprocess.run(["movescu", "-S", "-aet", SCU_AE, "-aec", aec, "-aem", DEST_AE,
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                        "127.0.0.1", str(port)], env=ENV, check=True, capture_output=True)
        wall = time.perf_counter() - start
        count = len(list(out.iterdir()))
    finally:
        dest.terminate()
        dest.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(out)], check=False)
    assert count == MOVE_SERIES, f"{count} instances arrived"
    return {"seconds": wall, "rate": MOVE_SERIES / wall}


def get_time(port: int, aec: str, study_uid: str) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="dimse-get-", dir=WORK_DIR))
    try:
        start = time.perf_counter()
        subprocess.run(["getscu", "-S", "-aet", SCU_AE, "-aec", aec,
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                        "-od", str(out), "127.0.0.1", str(port)],
                       env=ENV, check=True, capture_output=True)
        wall = time.perf_counter() - start
        count = len(list(out.iterdir()))
    finally:
        subprocess.run(["rm", "-rf", str(out)], check=False)
    assert count == MOVE_SERIES, f"{count} instances arrived by C-GET"
    return {"seconds": wall}


def run_server(kind: str, series: list[list[Path]], move: list[Path], repeats: int
               , processes: int = 1, store_only: bool = False, index: str = "sqlite",
               associations: tuple[int, ...] = (1, 4), pg_prefix: str = "",
               retrieve_only: int = 0, find_only: int = 0) -> dict[str, Any]:
    from pydicom import dcmread

    results: dict[str, list[float]] = {}
    loads: list[float] = []
    dest_port = free_port()
    for rep in range(repeats):
        dicom_port = free_port()
        if kind == "cloudfilm":
            os.environ["CLOUDFILM_DIMSE__PROCESSES"] = str(processes)
            database = f"{pg_prefix}bench_cloudfilm"
            srv: Any = Cloudfilm(index=index, pg_database=database,
                                 extra_args=("--dicom-port", str(dicom_port),
                                             "--ae-title", "CLOUDFILM"))
            aec = "CLOUDFILM"
        else:
            database = f"{pg_prefix}bench_orthanc"
            srv = Orthanc(index=index, pg_database=database, dicom_port=dicom_port,
                          aet="BENCHORTHANC")
            aec = "BENCHORTHANC"
        pg = database if index == "postgresql" else None
        with srv:
            if kind == "cloudfilm":
                _wait_for_listeners(srv, processes)
                data = srv.workdir / "data"
                for ae, p in ((SCU_AE, 104), (DEST_AE, dest_port)):
                    subprocess.run([str(EXE), "peers", "add", "--data", str(data), ae,
                                    "127.0.0.1", str(p), "--hospital", "BENCH"],
                                   check=True, capture_output=True, env=srv.env)
            else:
                # Orthanc answers C-FIND/C-MOVE only for known modalities.
                for name, ae, p in (("dest", DEST_AE, dest_port), ("scu", SCU_AE, 104)):
                    httpx.put(f"http://127.0.0.1:{srv.http_port}/modalities/{name}",
                              json={"AET": ae, "Host": "127.0.0.1", "Port": p}
                              ).raise_for_status()
            if find_only:
                find_rounds(srv, dicom_port, aec, series, find_only, results,
                            f"{kind} #{rep + 1}")
                loads.append(os.getloadavg()[0])
                continue
            if retrieve_only:
                retrieve_rounds(srv, dicom_port, aec, move, dest_port, retrieve_only, results,
                                f"{kind} #{rep + 1}")
                loads.append(os.getloadavg()[0])
                continue
            files = [p for s in series for p in s]
            share = len(files) // len(associations)
            rounds: dict[int, dict[str, float]] = {}
            for k, assocs in enumerate(associations):
                part = files[k * share:(k + 1) * share]
                log(f"{kind} #{rep + 1}: C-STORE {len(part)} over {assocs} association(s)")
                rounds[assocs] = store_rate(srv, dicom_port, aec, part, assocs, pg)
            log(f"{kind} #{rep + 1} ({index}, x{processes}): " + ", ".join(
                f"{r['rate']:.1f}/s ({r['cpu_ms']:.1f}+{r['db_cpu_ms']:.1f} ms CPU) x{a}"
                for a, r in rounds.items()) + f"; load {os.getloadavg()[0]:.1f}")
            loads.append(os.getloadavg()[0])
            for assocs, r in rounds.items():
                results.setdefault(f"store{assocs}", []).append(r["rate"])
                results.setdefault(f"store{assocs}_cpu", []).append(r["cpu_ms"])
                if pg:
                    results.setdefault(f"store{assocs}_db", []).append(r["db_cpu_ms"])
            if store_only:
                continue
            storescu(dicom_port, aec, move)
            pids = [str(dcmread(s[0], stop_before_pixels=True).PatientID) for s in series]
            log(f"{kind} #{rep + 1}: C-FIND x200")
            cpu0 = srv.cpu_seconds()
            try:
                f = find_latency(dicom_port, aec, pids)
                f["cpu_ms"] = (srv.cpu_seconds() - cpu0) * 1000 / 200
            except Exception as exc:  # reported as missing, the rest still runs
                log(f"{kind}: C-FIND failed: {exc!r}")
                f = {}
            log(f"{kind} #{rep + 1}: C-MOVE {MOVE_SERIES}")
            study = str(dcmread(move[0], stop_before_pixels=True).StudyInstanceUID)
            m, g = {}, {}
            cpu0 = srv.cpu_seconds()
            try:
                m = move_time(dicom_port, aec, study, dest_port)
                m["cpu_s"] = srv.cpu_seconds() - cpu0
            except Exception as exc:  # reported as missing, the rest still runs
                log(f"{kind}: C-MOVE failed: {_failure(exc)}\n{srv.log_tail(30)}")
            log(f"{kind} #{rep + 1}: C-GET {MOVE_SERIES}")
            cpu0 = srv.cpu_seconds()
            try:
                g = get_time(dicom_port, aec, study)
                g["cpu_s"] = srv.cpu_seconds() - cpu0
            except Exception as exc:
                log(f"{kind}: C-GET failed: {_failure(exc)}\n{srv.log_tail(30)}")
        for key, value in (("find_p50", f.get("p50")), ("find_p95", f.get("p95")),
                           ("find_cpu", f.get("cpu_ms")), ("move_s", m.get("seconds")),
                           ("move_cpu", m.get("cpu_s")), ("get_s", g.get("seconds")),
                           ("get_cpu", g.get("cpu_s"))):
            if value is not None:
                results.setdefault(key, []).append(value)
    return {**{k: statistics.median(v) for k, v in results.items()},
            "load1": statistics.median(loads)}


def retrieve_rounds(srv: Any, port: int, aec: str, move: list[Path], dest_port: int,
                    rounds: int, results: dict[str, list[float]], label: str) -> None:
    """Store the series to move, then C-MOVE and C-GET it ``rounds`` times each, alternating
    (``--retrieve-only``: no C-STORE rounds or C-FIND, for a shorter bench-lock hold)."""
    from pydicom import dcmread

    storescu(port, aec, move)
    study = str(dcmread(move[0], stop_before_pixels=True).StudyInstanceUID)
    for i in range(rounds):
        for key, run in (("move", lambda: move_time(port, aec, study, dest_port)),
                         ("get", lambda: get_time(port, aec, study))):
            cpu0 = srv.cpu_seconds()
            try:
                wall = run()["seconds"]
            except Exception as exc:  # reported as missing, the rest still runs
                log(f"{label}: C-{key.upper()} failed: {_failure(exc)}\n{srv.log_tail(30)}")
                continue
            cpu = srv.cpu_seconds() - cpu0
            results.setdefault(f"{key}_s", []).append(wall)
            results.setdefault(f"{key}_cpu", []).append(cpu)
            log(f"{label} C-{key.upper()} {i + 1}: {wall:.3f} s, server CPU {cpu:.3f} s, "
                f"load {os.getloadavg()[0]:.1f}")


def find_rounds(srv: Any, port: int, aec: str, series: list[list[Path]], rounds: int,
                results: dict[str, list[float]], label: str) -> None:
    """Store the first few instances of each series (one study per patient), then time
    ``rounds`` rounds of 200 C-FINDs (``--find-only``: no C-STORE rounds, C-MOVE or C-GET,
    for a short bench-lock hold)."""
    from pydicom import dcmread

    storescu(port, aec, [p for s in series for p in s[:FIND_ONLY_INSTANCES]])
    pids = [str(dcmread(s[0], stop_before_pixels=True).PatientID) for s in series]
    for i in range(rounds):
        cpu0 = srv.cpu_seconds()
        try:
            f = find_latency(port, aec, pids)
        except Exception as exc:  # reported as missing, the rest still runs
            log(f"{label}: C-FIND failed: {exc!r}")
            continue
        f["cpu_ms"] = (srv.cpu_seconds() - cpu0) * 1000 / 200
        for key in ("p50", "p95", "cpu_ms"):
            results.setdefault("find_cpu" if key == "cpu_ms" else f"find_{key}",
                               []).append(f[key])
        log(f"{label} C-FIND round {i + 1}: p50 {f['p50']:.2f} ms, p95 {f['p95']:.2f} ms, "
            f"server CPU {f['cpu_ms']:.2f} ms, load {os.getloadavg()[0]:.1f}")


def store_rows(associations: tuple[int, ...]) -> list[tuple[str, str, bool]]:
    rows = []
    for a in associations:
        rows += [(f"store{a}", f"C-STORE, {a} association{'s' * (a > 1)} (inst/s)", True),
                 (f"store{a}_cpu", "  server CPU per instance (ms)", False),
                 (f"store{a}_db", "  PostgreSQL backends' CPU per instance (ms)", False)]
    return rows


ROWS = [
    ("find_p50", "C-FIND study level p50 (ms)", False),
    ("find_p95", "C-FIND study level p95 (ms)", False),
    ("find_cpu", "  server CPU per C-FIND (ms)", False),
    ("move_s", f"C-MOVE {MOVE_SERIES}-instance series (s)", False),
    ("move_cpu", "  server CPU per C-MOVE (s)", False),
    ("get_s", f"C-GET {MOVE_SERIES}-instance series (s)", False),
    ("get_cpu", "  server CPU per C-GET (s)", False),
    ("load1", "  1-minute load average during the stores", False),
]


def table(cfs: dict[int, dict[str, float]], orthanc: dict[str, float], n: int,
          repeats: int, index: str = "sqlite", associations: tuple[int, ...] = (1, 4)) -> str:
    """One cloudfilm column per listener-process count; ratios are cloudfilm against
    Orthanc, >1 always better (rates: cloudfilm/Orthanc; times and CPU: Orthanc/cloudfilm)."""
    names = [f"cloudfilm x{p}" for p in cfs]
    lines = [f"DIMSE, {n} synthetic 512x512 CT instances (525 KB), {index} index, "
             f"TCP_NODELAY=1, median of {repeats} run(s); xN = DIMSE listener processes", "",
             "| metric | " + " | ".join(names) + " | Orthanc 1.10 | "
             + " | ".join(f"{c} / Orthanc" for c in names) + " |",
             "|---|" + "---|" * (2 * len(names) + 1)]
    for key, label, higher_better in store_rows(associations) + ROWS:
        b = orthanc.get(key)
        values = [cf.get(key) for cf in cfs.values()]
        if b is None and not any(values):
            continue
        ratios = [(a / b if higher_better else b / a) if a and b else None for a in values]
        cells = [(f"{v:.2f}" if v < 10 else f"{v:.1f}") if v else "-" for v in [*values, b]]
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{r:.2f}x" if r else "" for r in ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--processes", default="1",
                        help="comma-separated DIMSE listener process counts for cloudfilm")
    parser.add_argument("--skip-orthanc", action="store_true")
    parser.add_argument("--store-only", action="store_true",
                        help="measure C-STORE only (no C-FIND, C-MOVE, C-GET)")
    parser.add_argument("--retrieve-only", type=int, default=0, metavar="ROUNDS",
                        help="store only the series to move, then C-MOVE and C-GET it "
                             "ROUNDS times per server start (no C-STORE rounds, no C-FIND)")
    parser.add_argument("--find-only", type=int, default=0, metavar="ROUNDS",
                        help="store a few instances per series, then ROUNDS rounds of 200 "
                             "C-FINDs per server start (no C-STORE rounds, C-MOVE, C-GET)")
    parser.add_argument("--associations", default="1,4",
                        help="comma-separated simultaneous C-STORE associations, one round each")
    parser.add_argument("--index", default="sqlite",
                        help="comma-separated indexes to run both servers on: sqlite,postgresql")
    parser.add_argument("--pg-prefix", default="",
                        help="prefix of the PostgreSQL databases the bench recreates")
    args = parser.parse_args()
    series, move = prepare(args.instances)
    n = sum(len(s) for s in series)
    assocs = tuple(int(x) for x in args.associations.split(","))
    texts, figures = [], {}
    for index in args.index.split(","):
        kw = {"store_only": args.store_only, "index": index, "associations": assocs,
              "pg_prefix": args.pg_prefix, "retrieve_only": args.retrieve_only,
              "find_only": args.find_only}
        cf = {p: run_server("cloudfilm", series, move, args.repeats, processes=p, **kw)
              for p in (int(x) for x in args.processes.split(","))}
        orthanc = {} if args.skip_orthanc else run_server("orthanc", series, move,
                                                          args.repeats, **kw)
        texts.append(table(cf, orthanc, n, args.repeats, index, assocs))
        figures[index] = {"cloudfilm": {str(k): v for k, v in cf.items()},
                          "orthanc": orthanc, "instances": n}
    text = "\n\n".join(texts)
    print(text)
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"dimse-{stamp}.md").write_text(text + "\n")
    (out / f"dimse-{stamp}.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
