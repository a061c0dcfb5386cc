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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--syntax", default="1.2.840.10008.1.2.4.80")
    args = parser.parse_args()
    table = compression_table(args.syntax, args.slices, args.runs)
    print("| modality | objects | re-encoded | ratio | MB/s per core (encode+verify) "
          "| left alone |\n|---|---|---|---|---|---|")
    for modality, row in table.items():
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        speed = f"{row['mb_per_cpu_second']:.0f}" if row["mb_per_cpu_second"] else "-"
        print(f"| {modality} | {row['objects']} | {row['reencoded']} | {ratio} | {speed} "
              f"| {', '.join(f'{k} {v}' for k, v in row['left_alone'].items())} |")
    wado = wado_comparison(args.slices, args.runs)
    print()
    for key, value in wado.items():
        print(f"- {key}: {value}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage_bench.json").write_text(json.dumps(
        {"compression": table, "wado": wado}, indent=2, default=str))


if __name__ == "__main__":
    main()
