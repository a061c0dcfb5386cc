"""Lossless re-encoding: ratio and throughput per modality, and WADO-RS of a re-encoded
series against the same series uncompressed.

    .venv/bin/python bench/storage_bench.py [--slices 100] [--runs 3] [--syntax UID]

Part 1 reads the shared real-file set (/work/shared/testdata/dicom, every uncompressed
image the policy takes) and a synthetic CT series (bench/synth.py), and times
``compress_lossless`` on one core: encode + decode again + byte comparison, i.e. the whole
work of one re-encoding job except blob I/O. Part 2 builds two embedded archives in
bench/work/storage (SQLite + folder), stores the synthetic series in both, re-encodes one
through the job system, and times WADO-RS retrieval of the whole series in-process: stored
syntax (``transfer-syntax=*``), and decoded for a client that names no syntax.
Part 3 (throughput) ingests --slices synthetic CT slices into a fresh archive with
compression on (in-process ingest, one thread: the ingest rate), then starts
``cloudfilm jobs worker --workers N`` (real huey worker processes) and times until every job
is done: re-encoding objects/s against ingest objects/s, for each N of --workers.
Part 4 (keepup, bench/keepup.py) is the keep-up comparison through the real doors: ingest
alone (STOW-RS batches to ``cloudfilm serve --workers 2`` and C-STORE, PostgreSQL index),
re-encoding alone (``cloudfilm jobs worker --workers 2`` on that backlog), then both at once,
at full speed and paced at the rate both fit in 2 cores; CPU per object and load averages.
Run it alone under the bench lock: ``--skip ratio --skip wado --skip throughput``.
Output: a Markdown table on stdout and bench/out/storage_bench.json. Medians of --runs.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SHARED = Path("/work/shared/testdata/dicom")

from cloudfilm.infrastructure.dicom.lossless import (  # noqa: E402
    LosslessError,
    compress_lossless,
)
from synth import make_ct_series, to_bytes  # noqa: E402

# Real CT pixels kept losslessly compressed in the shared set (BENCHMARKING.md: 693_UNCI
# holds the lossy J2K pixels; the J2KR file decoded is the real slice).
_REAL_LOSSLESS = ("compressed/CT_693_J2KR.dcm", "compressed/CT_RLE_multiple_fragments.dcm",
                  "compressed/emri_small_J2KR.dcm", "compressed/CR_Fuji_RG2_JPEG-LL.dcm")


def _decoded(path: Path) -> bytes | None:
    """A losslessly compressed shared file decoded to Explicit VR Little Endian."""
    try:
        ds = pydicom.dcmread(path)
        ds.decompress()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
    except Exception:
        return None


def _modality(raw: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    m = str(ds.get("Modality", "OT"))
    return "CR/DX" if m in ("CR", "DX") else m


def compression_table(syntax: str, slices: int, runs: int) -> dict[str, Any]:
    samples: dict[str, list[bytes]] = defaultdict(list)
    if SHARED.is_dir():
        for path in sorted(SHARED.rglob("*.dcm")):
            raw = path.read_bytes()
            try:
                samples[_modality(raw)].append(raw)
            except Exception:
                continue
        for rel in _REAL_LOSSLESS:
            raw_or_none = _decoded(SHARED / rel)
            if raw_or_none is not None:
                samples[_modality(raw_or_none) + " (decoded lossless originals)"].append(
                    raw_or_none)
    samples["CT (synthetic)"] = [to_bytes(ds) for ds in make_ct_series(
        slices, patient_id="BENCH", patient_name="Bench^CT")]
    table: dict[str, Any] = {}
    for modality, objects in sorted(samples.items()):
        raw_bytes = new_bytes = 0
        taken = 0
        left: dict[str, int] = defaultdict(int)
        times = []
        for run in range(runs):
            started = time.process_time()
            for raw in objects:
                try:
                    out = compress_lossless(raw, syntax)
                except LosslessError as exc:
                    if run == 0:
                        left[str(exc).split(":")[0]] += 1
                    continue
                if run == 0:
                    raw_bytes += len(raw)
                    new_bytes += len(out.data)
                    taken += 1
            times.append(time.process_time() - started)
        cpu = statistics.median(times)
        table[modality] = {
            "objects": len(objects), "reencoded": taken, "left_alone": dict(left),
            "raw_mb": raw_bytes / 1e6, "ratio": raw_bytes / new_bytes if new_bytes else None,
            "mb_per_cpu_second": raw_bytes / 1e6 / cpu if cpu and raw_bytes else None,
        }
    return table


def wado_comparison(slices: int, runs: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.config import SecuritySettings, Settings, StorageSettings
    from cloudfilm.interfaces.api.http import create_app
    from cloudfilm.services.archive.ingest import Sender

    configure_dicom_libraries()
    work = ROOT / "bench" / "work" / "storage"
    shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {}
    datasets = list(make_ct_series(slices, patient_id="WADO", patient_name="Wado^Bench"))
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    for label, compress in (("uncompressed", False), ("jpeg-ls", True)):
        data = work / label
        # The bench reads as the local operator (TestClient's host is "testclient").
        security = SecuritySettings(local_mode="open", local_clients=["testclient"],
                                    allow_open_local_mode=True)
        services = build_services(Settings(data_dir=data, security=security,
                                           storage=StorageSettings(compress=compress)))
        spool = data / "in"
        spool.mkdir(parents=True, exist_ok=True)
        sender = Sender(hospital_code="BENCH", hospital_name="Bench", door="bench")
        for i, ds in enumerate(datasets):
            path = spool / f"{i}.dcm"
            path.write_bytes(to_bytes(ds))
            services.ingest.ingest_file(path, sender=sender, move=True)
        job_seconds = None
        if compress:
            assert services.storage is not None
            started = time.perf_counter()
            services.storage.run_pending()
            job_seconds = time.perf_counter() - started
        disk = sum(p.stat().st_size for p in (data / "blobs").rglob("*") if p.is_file())
        client = TestClient(create_app(services))
        url = f"/dicomweb/studies/{study}/series/{series}"
        accepts = {"as stored": 'multipart/related; type="application/dicom"; '
                                "transfer-syntax=*",
                   "no syntax named": 'multipart/related; type="application/dicom"'}
        for name, accept in accepts.items():
            seconds, size = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                response = client.get(url, headers={"Accept": accept})
                seconds.append(time.perf_counter() - started)
                size = len(response.content)
                assert response.status_code == 200, response.text[:200]
            results[f"{label}, {name}"] = {"seconds": statistics.median(seconds),
                                           "wire_mb": size / 1e6}
        results[f"{label} disk_mb"] = disk / 1e6
        if job_seconds is not None:
            results["reencode_jobs_seconds"] = job_seconds
            results["reencode_objects_per_second"] = slices / job_seconds
        services.health._db.dispose()
    return results


def job_steps(raws: list[bytes], syntax: str) -> dict[str, float]:
    """CPU per object of each step of a re-encoding job's codec path (medians of 3 rounds);
    the rest of ``job_cpu_ms_per_object`` is blob I/O, the index and job bookkeeping."""
    import hashlib

    import numpy as np

    from cloudfilm.infrastructure.dicom import lossless as ll

    steps: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):
        spent: dict[str, float] = defaultdict(float)
        for raw in raws:
            t0 = time.process_time()
            hashlib.sha256(raw).hexdigest()
            t1 = time.process_time()
            ds = pydicom.dcmread(io.BytesIO(raw))
            ll.why_not(ds)
            original = ll._pixel_bytes(ds)
            g = ll._Geometry.of(ds)
            t2 = time.process_time()
            frames = [ll._ENCODERS[syntax](original, g)]
            t3 = time.process_time()
            data = ll._splice(raw, ds, frames, syntax)
            t4 = time.process_time()
            again = pydicom.dcmread(io.BytesIO(data))
            frame = next(iter(ll.generate_frames(again.PixelData, number_of_frames=1)))
            decoded = ll._decode_frame(syntax, frame, g)
            t5 = time.process_time()
            assert np.array_equal(np.frombuffer(decoded, np.uint8),
                                  np.frombuffer(original, np.uint8))
            hashlib.sha256(data).hexdigest()
            t6 = time.process_time()
            for name, seconds in (("read sha256", t1 - t0), ("parse + checks", t2 - t1),
                                  ("encode", t3 - t2), ("build file (splice)", t4 - t3),
                                  ("verify decode", t5 - t4), ("compare + new sha256", t6 - t5)):
                spent[name] += seconds
        for name, seconds in spent.items():
            steps[name].append(seconds * 1000 / len(raws))
    return {name: round(statistics.median(v), 2) for name, v in steps.items()}


def throughput(slices: int, workers: list[int], syntax: str) -> dict[str, Any]:
    """Ingest rate vs re-encoding rate through real worker processes."""
    import os
    import signal
    import subprocess

    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.config import Settings, StorageSettings
    from cloudfilm.services.archive.ingest import Sender

    configure_dicom_libraries()
    datasets = [to_bytes(ds) for ds in make_ct_series(slices, patient_id="TPUT",
                                                      patient_name="Tput^Bench")]
    out: dict[str, Any] = {"objects": slices, "syntax": syntax}
    for n in workers:
        data = ROOT / "bench" / "work" / "storage" / f"tput{n}"
        shutil.rmtree(data, ignore_errors=True)
        storage = StorageSettings(compress=True, compress_default=syntax,
                                  delete_grace_seconds=0)
        services = build_services(Settings(data_dir=data, storage=storage))
        spool = data / "in"
        spool.mkdir(parents=True, exist_ok=True)
        sender = Sender(hospital_code="BENCH", hospital_name="Bench", door="bench")
        started = time.perf_counter()
        cpu = time.process_time()
        for i, raw in enumerate(datasets):
            path = spool / f"{i}.dcm"
            path.write_bytes(raw)
            services.ingest.ingest_file(path, sender=sender, move=True)
        ingest_s = time.perf_counter() - started
        out["ingest_objects_per_second"] = slices / ingest_s
        out["ingest_cpu_ms_per_object"] = (time.process_time() - cpu) * 1000 / slices
        if n == workers[0]:  # CPU of the whole job (read, encode, verify, write, index)
            probe = ROOT / "bench" / "work" / "storage" / "probe"
            shutil.rmtree(probe, ignore_errors=True)
            inline = build_services(Settings(data_dir=probe, storage=storage))
            (probe / "in").mkdir(parents=True, exist_ok=True)
            for i, raw in enumerate(datasets[:50]):
                path = probe / "in" / f"{i}.dcm"
                path.write_bytes(raw)
                inline.ingest.ingest_file(path, sender=sender, move=True)
            assert inline.storage is not None
            cpu = time.process_time()
            inline.storage.run_pending()
            out["job_cpu_ms_per_object"] = (time.process_time() - cpu) * 1000 / min(slices, 50)
            inline.health._db.dispose()
            out["steps_cpu_ms_per_object"] = job_steps(datasets[:50], syntax)
            # Both share the 2 cores: re-encoding keeps up when it costs no more CPU per
            # object than ingest does.
            out["reencode_per_ingest_cpu"] = (out["job_cpu_ms_per_object"]
                                              / out["ingest_cpu_ms_per_object"])
        env = {**os.environ, "CLOUDFILM_DATA_DIR": str(data), "CLOUDFILM_AUTO_MIGRATE": "false",
               "CLOUDFILM_STORAGE__COMPRESS": "true",
               "CLOUDFILM_STORAGE__COMPRESS_DEFAULT": syntax,
               "CLOUDFILM_STORAGE__DELETE_GRACE_SECONDS": "0",
               "CLOUDFILM_JOBS__RELAY_SECONDS": "0.2", "CLOUDFILM_JOBS__NICE": "0"}
        assert services.storage is not None
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "cloudfilm", "jobs", "worker",
                                   "--workers", str(n)], env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first: tuple[float, int] | None = None  # (when, done) once the workers are up
        try:
            while (done := services.storage.job_counts().get("done", 0)) < slices:
                if first is None and done:
                    first = (time.perf_counter(), done)
                if time.perf_counter() - started > 900:
                    break
                time.sleep(0.1)
            seconds = time.perf_counter() - started
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        done = services.storage.job_counts().get("done", 0)
        # Process start-up (imports, services built per worker) is seconds of CPU that a
        # loaded machine stretches: the steady rate runs from the first finished job.
        steady = ((done - first[1]) / (started + seconds - first[0])
                  if first is not None and done > first[1] else None)
        out[f"workers={n}"] = {"seconds_incl_start": seconds, "done": done,
                               "objects_per_second_incl_start": done / seconds,
                               "objects_per_second_steady": steady}
        services.health._db.dispose()
    return out


def _print_table(table: dict[str, Any]) -> None:
    print("| modality | objects | re-encoded | ratio | MB/s per core (encode+verify) "
          "| left alone |\n|---|---|---|---|---|---|")
    for modality, row in table.items():
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        speed = f"{row['mb_per_cpu_second']:.0f}" if row["mb_per_cpu_second"] else "-"
        print(f"| {modality} | {row['objects']} | {row['reencoded']} | {ratio} | {speed} "
              f"| {', '.join(f'{k} {v}' for k, v in row['left_alone'].items())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--syntax", action="append",
                        help="Target syntax (repeatable; default JPEG-LS and HTJ2K lossless)")
    parser.add_argument("--workers", type=int, action="append",
                        help="Worker processes for part 3 (repeatable; default 1 and 2)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["ratio", "wado", "throughput", "keepup"])
    parser.add_argument("--keepup-objects", type=int, default=1000,
                        help="Slices for part 4 (half by STOW, half by C-STORE)")
    parser.add_argument("--stow-batch", type=int, default=50)
    parser.add_argument("--stow-clients", type=int, default=2)
    parser.add_argument("--keepup-syntax", default="1.2.840.10008.1.2.4.80",
                        help="Part 4's target syntax (HTJ2K: 1.2.840.10008.1.2.4.201)")
    parser.add_argument("--keepup-alone-only", action="store_true",
                        help="Part 4: ingest alone and re-encoding alone (phases 1-2) only")
    args = parser.parse_args()
    syntaxes = args.syntax or ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"]
    tables: dict[str, Any] = {}
    if "ratio" not in args.skip:
        for syntax in syntaxes:
            print(f"\n### {syntax}\n")
            tables[syntax] = compression_table(syntax, args.slices, args.runs)
            _print_table(tables[syntax])
    tput: dict[str, Any] = {}
    if "throughput" not in args.skip:
        for syntax in syntaxes:
            tput[syntax] = throughput(args.slices, args.workers or [1, 2], syntax)
            print(f"\n- throughput {syntax}: {tput[syntax]}")
    keep: dict[str, Any] = {}
    if "keepup" not in args.skip:
        from keepup import keep_up, print_keep_up

        keep = keep_up(args.keepup_objects, stow_batch=args.stow_batch,
                       stow_clients=args.stow_clients, syntax=args.keepup_syntax,
                       both=not args.keepup_alone_only)
        print_keep_up(keep)
    wado = wado_comparison(args.slices, args.runs) if "wado" not in args.skip else {}
    print()
    for key, value in wado.items():
        print(f"- {key}: {value}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage_bench.json").write_text(json.dumps(
        {"compression": tables, "throughput": tput, "keepup": keep, "wado": wado}, indent=2,
        default=str))


if __name__ == "__main__":
    main()
