"""Ten million instances (issue 12): fill a PostgreSQL index with synthetic rows, then time
queries through the real services at that size.

Rows only (no blobs): hospitals, patients, studies, series and instances with precomputed
JSON, generated server-side with ``INSERT ... SELECT generate_series`` into a fresh
``bench_scale`` database migrated with Alembic. Then ``ANALYZE`` (autovacuum is off here).

    .venv/bin/python bench/scale_bench.py --instances 1000000 [--reuse]

Output: bench/out/scale_bench.json. Work in progress: see docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "bench_scale"
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"
OUT = Path(__file__).parent / "out"
ROOT = Path(__file__).resolve().parent.parent

# Shape per instance count: 2 studies per patient, 2 series per study, the rest instances.
PER_SERIES = 50


def fill(instances: int) -> dict[str, float]:
    series = max(1, instances // PER_SERIES)
    studies = max(1, series // 2)
    patients = max(1, studies // 2)
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    subprocess.run([str(ROOT / ".venv/bin/cloudfilm"), "db", "upgrade"], check=True,
                   env={**os.environ, "CLOUDFILM_DATABASE_URL": URL}, timeout=300)
    times: dict[str, float] = {}
    with psycopg.connect(URL.replace("+psycopg", ""), autocommit=True) as conn:
        def step(name: str, sql: str) -> None:
            started = time.perf_counter()
            conn.execute(sql)
            times[name] = round(time.perf_counter() - started, 1)
            print(f"{name}: {times[name]} s", file=sys.stderr, flush=True)

        step("hospital", "INSERT INTO hospital (code, name, created_at) SELECT 'H' || g, "
             "'Hospital ' || g, now() FROM generate_series(1, 2000) g")
        step("patient", f"""INSERT INTO patient (id, hospital_id, patient_id,
             issuer_of_patient_id, patient_name, name_search, birth_date, sex, updated_at)
             SELECT g, 1 + g % 2000, 'P' || g, '', 'DOE^' || g, 'DOE ' || g,
             to_char(date '1950-01-01' + (g % 20000), 'YYYYMMDD'), 'O', now()
             FROM generate_series(1, {patients}) g""")
        step("study", f"""INSERT INTO study (id, study_instance_uid, patient_fk, hospital_id,
             study_date, study_time, accession_number, referring_physician_name,
             study_description, study_id, institution_name, num_series, num_instances,
             size_bytes, received_at, updated_at, attributes_json)
             SELECT g, '1.2.826.0.1.3680043.10.1.' || g, 1 + (g - 1) / 2, 1 + ((g - 1) / 2) % 2000,
             to_char(date '2020-01-01' + (g % 2200), 'YYYYMMDD'), '120000', 'A' || g, '',
             'CT CHEST', '1', 'Hospital', 2, {2 * PER_SERIES}, {2 * PER_SERIES} * 525000,
             now(), now(), '{{}}' FROM generate_series(1, {studies}) g""")
        step("series", f"""INSERT INTO series (id, series_instance_uid, study_fk, modality,
             series_number, series_description, body_part_examined,
             performed_procedure_step_start_date, performed_procedure_step_start_time,
             num_instances, received_at, updated_at, attributes_json)
             SELECT g, '1.2.826.0.1.3680043.10.2.' || g, 1 + (g - 1) / 2, 'CT', 1 + g % 2,
             'AXIAL', 'CHEST', '', '', {PER_SERIES}, now(), now(), '{{}}'
             FROM generate_series(1, {series}) g""")
        step("instance", f"""INSERT INTO instance (id, sop_instance_uid, series_fk, study_fk,
             hospital_id, sop_class_uid, instance_number, number_of_frames, rows, columns,
             transfer_syntax_uid, blob_key, size_bytes, sha256, received_at, warnings,
             metadata_json)
             SELECT g, '1.2.826.0.1.3680043.10.3.' || g, 1 + (g - 1) / {PER_SERIES},
             1 + ((g - 1) / {PER_SERIES}) / 2, 1, '1.2.840.10008.5.1.4.1.1.2',
             1 + (g - 1) % {PER_SERIES}, 1, 512, 512, '1.2.840.10008.1.2.1',
             'b/' || g, 525000, md5(g::text) || md5(g::text), now(), '',
             '{{"00080018": {{"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.3.' || g
             || '"]}}, "00200013": {{"vr": "IS", "Value": [' || (1 + (g - 1) % {PER_SERIES})
             || ']}}}}'
             FROM generate_series(1, {series * PER_SERIES}) g""")
        for table in ("hospital", "patient", "study", "series", "instance"):
            conn.execute(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
        step("analyze", "ANALYZE")
    return times | {"patients": patients, "studies": studies, "series": series,
                    "instances": series * PER_SERIES}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2), "n": len(ordered)}


def measure(shape: dict[str, float], rounds: int) -> dict[str, object]:
    import random

    os.environ.update({"CLOUDFILM_DATABASE_URL": URL, "CLOUDFILM_AUTO_MIGRATE": "false",
                       "CLOUDFILM_SECURITY__LOCAL_MODE": "open",
                       "CLOUDFILM_SECURITY__ALLOW_OPEN_LOCAL_MODE": "true",
                       "CLOUDFILM_SECURITY__NATIONAL_ID_KEY": "A" * 43 + "=",
                       "CLOUDFILM_SECURITY__NATIONAL_ID_HMAC_KEY": "B" * 43 + "=",
                       "CLOUDFILM_SECURITY__ADMIN_TOKEN": "C" * 43 + "="})
    from fastapi.testclient import TestClient

    from cloudfilm.app import build_http_app, freeze_startup_objects
    from cloudfilm.config import load_settings

    app = build_http_app(load_settings())
    freeze_startup_objects()
    client = TestClient(app)
    rng = random.Random(7)
    results: dict[str, object] = {}

    def timed(name: str, urls: list[str], expect: int | None = None) -> None:
        samples = []
        for url in urls:
            started = time.perf_counter()
            answer = client.get(url, headers={"Accept": "application/dicom+json",
                                              "Authorization": "Bearer " + "C" * 43 + "="})
            samples.append(time.perf_counter() - started)
            assert answer.status_code in (200, 204), (url, answer.status_code, answer.text[:200])
            if expect is not None:
                assert len(answer.json()) == expect, (url, len(answer.json()))
        results[name] = percentiles(samples)
        print(name, results[name], file=sys.stderr, flush=True)

    patients, series = int(shape["patients"]), int(shape["series"])
    timed("qido_studies_by_patient_id",
          [f"/dicomweb/studies?PatientID=P{rng.randint(1, patients)}" for _ in range(rounds)], 2)
    timed("qido_studies_by_date_range",
          [f"/dicomweb/studies?StudyDate=2021{m:02d}01-2021{m:02d}02&limit=100"
           for m in [rng.randint(1, 12) for _ in range(rounds)]])
    picks = [rng.randint(1, series) for _ in range(rounds)]
    timed("qido_series_instances",
          [f"/dicomweb/studies/1.2.826.0.1.3680043.10.1.{1 + (s - 1) // 2}/series/"
           f"1.2.826.0.1.3680043.10.2.{s}/instances" for s in picks], PER_SERIES)
    timed("series_metadata",
          [f"/dicomweb/studies/1.2.826.0.1.3680043.10.1.{1 + (s - 1) // 2}/series/"
           f"1.2.826.0.1.3680043.10.2.{s}/metadata" for s in picks], PER_SERIES)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the filled database")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    shape_file = OUT / "scale_bench_shape.json"
    if args.reuse and shape_file.exists():
        shape = json.loads(shape_file.read_text())
    else:
        shape = fill(args.instances)
        shape_file.write_text(json.dumps(shape))
    results = {"shape": shape, "load_average": os.getloadavg(),
               "queries": measure(shape, args.rounds)}
    (OUT / "scale_bench.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
