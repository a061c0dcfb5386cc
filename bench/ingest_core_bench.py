"""The ingest core alone, in-process: CPU per object through the call every door makes.

No HTTP, no DIMSE: N distinct synthetic 512x512 CT objects (~525 KB, ``synth.py``) go through
``IngestService`` exactly as the doors hand them over (a spool file, ``move=True``):

- ``single``: one object per call through the group commit (``ingest_grouped``, as C-STORE
  and single-instance STOW-RS do), SHA-256 left to the pipeline (C-STORE's case);
- ``batch``: ``ingest_files`` with 50 objects per call (a batched STOW-RS request, whose
  door hashed the parts while spooling them).

Each round ingests new studies (series of 50 slices, a patient per study) into a fresh
archive; rounds alternate single and batch. Printed per mode and index: objects/s, this
process's CPU ms per object, PostgreSQL backends' CPU ms per object (their
``/proc/PID/stat``, PostgreSQL on this machine), and SQL statements per object.

    .venv/bin/python bench/ingest_core_bench.py --index sqlite,postgresql --objects 200 --rounds 3
    .venv/bin/python bench/ingest_core_bench.py --profile bench/out/ingest.prof --modes single

Time it under the bench lock (``flock /work/notes/bench.lock``); ``--profile`` runs cProfile
over the timed calls (for ratios, not for rates). A/B against another checkout: run the same
command with ``PYTHONPATH=OTHER/src`` (it takes precedence over the editable install).
PostgreSQL databases are ``PREFIX_ingest`` (``--pg-prefix``), recreated per run and dropped
at the end.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "ingest_core"
OUT = ROOT / "bench" / "out"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SERIES = 50
TICK = os.sysconf("SC_CLK_TCK")


def templates(count: int) -> Path:
    """``count`` distinct 512x512 CT files (cached in bench/work across runs)."""
    from synth import make_ct_series, make_uid, to_bytes

    folder = WORK / f"ct{count}"
    if folder.exists() and len(list(folder.glob("*.dcm"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    slices = list(make_ct_series(SERIES, patient_id="TEMPLATE", patient_name="Template^T"))
    for k in range(count):
        ds = slices[k % SERIES]
        study = k // SERIES
        ds.PatientID = f"ICB{study:06d}"
        ds.PatientName = "王^小东=Wang^Xiaodong"  # UTF-8 (ISO_IR 192): the charset path runs
        ds.StudyInstanceUID = make_uid("icb", "study", study)
        ds.SeriesInstanceUID = make_uid("icb", "series", study)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = make_uid("icb", k)
        ds.AccessionNumber = f"ICB{study:07d}"
        (folder / f"{k:06d}.dcm").write_bytes(to_bytes(ds))
    return folder


def relabelled(folder: Path, spool: Path, tag: str) -> list[Path]:
    """The template files with new UIDs for this round (bytes patched in place: same size,
    so the files stay valid), copied into ``spool`` for ``move=True``."""
    import pydicom

    from synth import make_uid

    paths = []
    for src in sorted(folder.glob("*.dcm")):
        data = src.read_bytes()
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        k = int(src.stem)
        study = k // SERIES
        for old, new in ((ds.StudyInstanceUID, make_uid("icb", tag, "study", study)),
                         (ds.SeriesInstanceUID, make_uid("icb", tag, "series", study)),
                         (ds.SOPInstanceUID, make_uid("icb", tag, k)),
                         (ds.PatientID, f"{tag[-5:]}{study:04d}")):
            new = str(new)[:len(old)].ljust(len(old), "0")
            data = data.replace(old.encode(), new.encode())
        path = spool / f"{tag}-{k:06d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def pg_backend_ticks(dbname: str) -> dict[int, int]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))]
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def recreate_pg(dbname: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {dbname}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"


def drop_pg(dbname: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


class Statements:
    """Counts the SQL statements the engine sends (executemany counts once)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_args: Any) -> None:
            self.count += 1


def run(index: str, folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from cloudfilm.app import build_services
    from cloudfilm.config import load_settings
    from cloudfilm.services.archive.ingest import IngestItem
    from cloudfilm.services.kernel.sender import Sender

    work = Path(tempfile.mkdtemp(prefix="ingest-core-", dir=WORK))
    dbname = f"{args.pg_prefix}_ingest"
    if index == "postgresql":
        os.environ["CLOUDFILM_DATABASE_URL"] = recreate_pg(dbname)
        for name in ("NATIONAL_ID_KEY", "NATIONAL_ID_HMAC_KEY", "ADMIN_TOKEN"):
            os.environ.setdefault(f"CLOUDFILM_SECURITY__{name}",
                                  base64.urlsafe_b64encode(os.urandom(32)).decode())
    else:
        os.environ.pop("CLOUDFILM_DATABASE_URL", None)
    services = build_services(load_settings(data_dir=work / "data"))
    ingest = services.ingest
    engine = ingest._db.engine
    statements = Statements(engine)
    spool = work / "data" / "spool-bench"
    spool.mkdir(parents=True, exist_ok=True)
    sender = Sender(hospital_code="H13", hospital_name="Hospital 13", door="c-store")
    # Warm-up: the first object creates the hospital row and fills the caches.
    warm = relabelled(folder, spool, f"w{index[0]}")[:2]
    ingest.ingest_files([IngestItem(p, move=True) for p in warm], sender=sender)
    # CPU time of the calling thread: wall time would charge GIL and fsync waits to
    # whatever ran when they happened.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    rows = []
    for r in range(args.rounds):
        for mode in args.modes:
            tag = f"{index[0]}{r}{mode[0]}{time.time_ns() % 10**6:06d}"
            paths = relabelled(folder, spool, tag)
            if mode == "batch":
                import hashlib
                digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
            pg0 = pg_backend_ticks(dbname) if index == "postgresql" else {}
            n0 = statements.count
            wall, cpu, times = time.perf_counter(), time.process_time(), os.times()
            if profiler:
                profiler.enable()
            if mode == "single":
                for p in paths:
                    result = ingest.ingest_grouped(IngestItem(p, move=True), sender=sender)
                    assert getattr(result, "outcome", None) == "stored", result
            else:
                for k in range(0, len(paths), SERIES):
                    results = ingest.ingest_files(
                        [IngestItem(p, move=True, sha256=d)
                         for p, d in zip(paths[k:k + SERIES], digests[k:k + SERIES],
                                         strict=True)], sender=sender)
                    assert all(getattr(x, "outcome", None) == "stored" for x in results), \
                        results[:1]
            if profiler:
                profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            n = len(paths)
            sys_ms = (os.times().system - times.system) * 1000 / n
            pg1 = pg_backend_ticks(dbname) if index == "postgresql" else {}
            pg_ms = sum(t - pg0.get(pid, 0) for pid, t in pg1.items()) * 1000 / TICK / n
            row = {"index": index, "mode": mode, "round": r, "objects": n,
                   "per_s": round(n / wall, 1), "cpu_ms": round(cpu * 1000 / n, 2),
                   "sys_ms": round(sys_ms, 2),
                   "pg_ms": round(pg_ms, 2) if index == "postgresql" else None,
                   "statements": round((statements.count - n0) / n, 2),
                   "load1": round(os.getloadavg()[0], 2)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    if profiler:
        profiler.dump_stats(f"{args.profile}.{index}")
    ingest._writers.shutdown()
    engine.dispose()
    shutil.rmtree(work, ignore_errors=True)
    if index == "postgresql":
        drop_pg(dbname)
    return rows


def breakdown(folder: Path, repeats: int = 3) -> dict[str, float]:
    """CPU µs per object of the pipeline's steps that need no database, each timed alone
    over the template files (thread CPU time, best of ``repeats``)."""

    import orjson

    from cloudfilm.infrastructure.dicom import json_model
    from cloudfilm.infrastructure.dicom.part10 import read_header
    from cloudfilm.services.archive import ingest as core

    paths = sorted(folder.glob("*.dcm"))
    # Each step runs on freshly parsed headers: pydicom converts elements in place on
    # first access, so a step after another would look cheaper than it is.
    steps: dict[str, Any] = {
        "header parse (read_header)": lambda hs: [read_header(p) for p in paths],
        "validate + identity fields (_validated: UIDs, PatientID, name charset, pinyin)":
            lambda hs: [core._validated(h) for h in hs],
        "JSON model + dumps + study/series subsets": lambda hs: [
            orjson.dumps(json_model.dataset_to_json_dict(
                h.dataset, bulk_base="x", has_pixel_data=True)) for h in hs],
        "SHA-256 of the file": lambda hs: [_sha256(p) for p in paths],
        "index row values (_instance_values, on a validated header)": lambda hs: [
            core._instance_values(_FakeEntry(h), h.parsed.dataset, 1, 1, 1,
                                  None) for h in hs],  # type: ignore[arg-type]
    }
    out: dict[str, float] = {}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(repeats):
            fresh: list[Any] = [read_header(p) for p in paths]
            if name.startswith("index row"):
                fresh = [core._validated(h) for h in fresh]
            t = time.thread_time()
            step(fresh)
            best = min(best, time.thread_time() - t)
        out[name] = round(best * 1e6 / len(paths), 1)
    return out


def _sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class _FakeEntry:
    def __init__(self, header: Any) -> None:
        self.header = header
        self.key = "k"
        self.sha256 = "s"
        self.metadata_json = "{}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", default="sqlite,postgresql")
    parser.add_argument("--objects", type=int, default=200, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="single,batch")
    parser.add_argument("--pg-prefix", default="ingest13")
    parser.add_argument("--profile", default="", help="cProfile output file prefix")
    parser.add_argument("--label", default="", help="name of this checkout in the output")
    parser.add_argument("--breakdown", action="store_true",
                        help="only time the steps that need no database, per object")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    folder = templates(args.objects)
    if args.breakdown:
        for name, us in breakdown(folder).items():
            print(f"{us:8.1f} µs  {name}")
        return
    import cloudfilm

    checkout = Path(cloudfilm.__file__).resolve().parents[2]
    label = args.label or checkout.name
    print(f"checkout {checkout} load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = []
    for index in args.index.split(","):
        rows += run(index, folder, args)
    print(f"\n{label}: medians of {args.rounds} rounds of {args.objects} objects")
    print(f"{'index':11} {'mode':7} {'obj/s':>7} {'CPU ms':>7} {'PG ms':>6} {'stmts':>6}")
    for index in args.index.split(","):
        for mode in args.modes:
            sel = [x for x in rows if x["index"] == index and x["mode"] == mode]
            pg = statistics.median(x["pg_ms"] for x in sel) if index == "postgresql" else None
            print(f"{index:11} {mode:7} {statistics.median(x['per_s'] for x in sel):7.1f} "
                  f"{statistics.median(x['cpu_ms'] for x in sel):7.2f} "
                  f"{'' if pg is None else f'{pg:.2f}':>6} "
                  f"{statistics.median(x['statements'] for x in sel):6.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"ingest_core_bench-{label}.json").write_text(json.dumps(
        {"label": label, "checkout": str(checkout), "rows": rows,
         "git": subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                               capture_output=True, text=True).stdout.strip()}, indent=1))


if __name__ == "__main__":
    main()
