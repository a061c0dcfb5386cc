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
from typing import Any

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = os.environ.get("SCALE_BENCH_DB", "scale_bench")
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
            # "<step>_s": the counts below reuse the names patients/series/instances.
            times[f"{name}_s"] = round(time.perf_counter() - started, 1)
            print(f"{name}: {times[f'{name}_s']} s", file=sys.stderr, flush=True)

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
             SELECT g, '1.2.826.0.1.3680043.10.1.' || g, 1 + (g - 1) / 2,
             1 + (1 + (g - 1) / 2) % 2000,
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
             1 + ((g - 1) / {PER_SERIES}) / 2, 1 + (1 + ((g - 1) / {PER_SERIES}) / 2) % 2000,
             '1.2.840.10008.5.1.4.1.1.2',
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


def bench_env() -> None:
    """The settings a PostgreSQL deployment needs (its own secrets), for every part."""
    os.environ.update({"CLOUDFILM_DATABASE_URL": URL, "CLOUDFILM_AUTO_MIGRATE": "false",
                       "CLOUDFILM_SECURITY__LOCAL_MODE": "open",
                       "CLOUDFILM_SECURITY__ALLOW_OPEN_LOCAL_MODE": "true",
                       "CLOUDFILM_SECURITY__NATIONAL_ID_KEY": "A" * 43 + "=",
                       "CLOUDFILM_SECURITY__NATIONAL_ID_HMAC_KEY": "B" * 43 + "=",
                       "CLOUDFILM_SECURITY__ADMIN_TOKEN": "C" * 43 + "="})


def measure(shape: dict[str, float], rounds: int, *, doctor_only: bool = False
            ) -> dict[str, object]:
    import random

    bench_env()
    from fastapi.testclient import TestClient

    from cloudfilm.app import (
        build_services,
        configure_dicom_libraries,
        freeze_startup_objects,
        web_options,
    )
    from cloudfilm.config import load_settings
    from cloudfilm.interfaces.api.http import create_app

    configure_dicom_libraries()
    settings = load_settings()
    services = build_services(settings)
    app = create_app(services, web=web_options(settings))
    freeze_startup_objects()
    client = TestClient(app, base_url="http://127.0.0.1")
    rng = random.Random(7)
    results: dict[str, object] = {}
    if doctor_only:
        return doctor_queries(services, shape, rounds)

    def timed(name: str, urls: list[str], expect: int | None = None) -> None:
        samples = []
        cpu = time.process_time()
        for url in urls:
            started = time.perf_counter()
            answer = client.get(url, headers={"Accept": "application/dicom+json",
                                              "Authorization": "Bearer " + "C" * 43 + "="})
            samples.append(time.perf_counter() - started)
            assert answer.status_code in (200, 204), (url, answer.status_code, answer.text[:200])
            if expect is not None:
                assert len(answer.json()) == expect, (url, len(answer.json()))
        # CPU of this process per request (the app and its TestClient): the steadier
        # figure on a shared machine, where wall time is mostly waiting for a core.
        results[name] = percentiles(samples) | {
            "cpu_ms": round((time.process_time() - cpu) * 1000 / len(urls), 2)}
        print(name, results[name], file=sys.stderr, flush=True)

    patients, series = int(shape["patients"]), int(shape["series"])
    timed("qido_studies_by_patient_id",
          [f"/dicomweb/studies?PatientID=P{rng.randint(1, patients)}" for _ in range(rounds)], 2)
    # ~92 studies whatever the size: 2 days at 10 M (100,000 studies over 2,200 days), 20
    # days at 1 M, so that a small index measures the same answer (the cost is per study and
    # per resident in the answer, not per row in the index).
    days = min(28, max(2, round(2 * 100_000 / int(shape["studies"]))))
    timed("qido_studies_by_date_range",
          [f"/dicomweb/studies?StudyDate=2021{m:02d}01-2021{m:02d}{days:02d}&limit=100"
           for m in [rng.randint(1, 12) for _ in range(rounds)]])
    picks = [rng.randint(1, series) for _ in range(rounds)]
    timed("qido_series_instances",
          [f"/dicomweb/studies/1.2.826.0.1.3680043.10.1.{1 + (s - 1) // 2}/series/"
           f"1.2.826.0.1.3680043.10.2.{s}/instances" for s in picks], PER_SERIES)
    timed("series_metadata",
          [f"/dicomweb/studies/1.2.826.0.1.3680043.10.1.{1 + (s - 1) // 2}/series/"
           f"1.2.826.0.1.3680043.10.2.{s}/metadata" for s in picks], PER_SERIES)
    results.update(doctor_queries(services, shape, rounds))
    results.update(c_find(shape, rounds))
    return results


# --- the policy-filtered doctor query -------------------------------------------------------

DOCTOR = "scale-doctor"
GRANTED = 40  # residents the doctor holds grants for (half whole-record, half one study)


def granted_residents(shape: dict[str, float]) -> list[int]:
    """Residents in the second eighth of the residents, spread out."""
    residents = (int(shape["patients"]) + 1) // 2
    step = max(1, residents // (8 * GRANTED))
    return [residents // 8 + 1 + k * step for k in range(GRANTED)]


def setup_doctor(shape: dict[str, float]) -> int:
    """Residents for every patient (two hospitals' records each: patients 2r-1 and 2r are
    at neighbouring hospitals), linked; a doctor of hospital H1 with active grants to
    ``GRANTED`` residents of other hospitals. Idempotent; returns the doctor's account id."""
    patients = int(shape["patients"])
    with psycopg.connect(URL.replace("+psycopg", ""), autocommit=True) as conn:
        found = conn.execute("SELECT id FROM account WHERE username = %s", (DOCTOR,)).fetchone()
        if found:
            return int(found[0])
        started = time.perf_counter()
        granted = granted_residents(shape)
        transaction = conn.transaction()
        transaction.__enter__()
        conn.execute(f"""INSERT INTO resident (id, national_id_masked, name, name_search,
            birth_date, sex, phone, status, created_at, updated_at, research_refused)
            SELECT r, '', 'DOE^' || r, 'DOE ' || r, '19700101', 'O', '', 'active', now(),
            now(), false FROM generate_series(1, {(patients + 1) // 2}) r""")
        conn.execute("SELECT setval('resident_id_seq', (SELECT max(id) FROM resident))")
        conn.execute(f"""INSERT INTO patient_link (patient_fk, resident_id, state, reason,
            source, updated_at) SELECT g, 1 + (g - 1) / 2, 'linked', '', 'bench', now()
            FROM generate_series(1, {patients}) g""")
        account = conn.execute("""INSERT INTO account (kind, username, display_name,
            hospital_id, department, phone_masked, failed_logins, active, created_at, area)
            VALUES ('doctor', %s, 'Dr Scale', 1, 'radiology', '', 0, true, now(), '')
            RETURNING id""", (DOCTOR,)).fetchone()
        assert account is not None
        for k, resident in enumerate(granted):
            uids = "[]" if k % 2 == 0 else json.dumps(
                [f"1.2.826.0.1.3680043.10.1.{2 * (2 * resident - 1) - 1}"])
            conn.execute("""INSERT INTO access_grant (doctor_account_id, hospital_id,
                resident_id, scope_all, study_uids, purpose, mode, status, hours,
                requested_at, decided_at, decided_by, expires_at, revoked_by, evidence,
                review_status, reviewed_by, review_note) VALUES (%s, 1, %s, %s, %s, 'bench',
                'sms', 'active', 720, now(), now(), 'bench', now() + interval '30 days', '',
                '', 'none', '', '')""", (account[0], resident, k % 2 == 0, uids))
        transaction.__exit__(None, None, None)
        conn.execute("ANALYZE resident")
        conn.execute("ANALYZE patient_link")
        conn.execute("ANALYZE access_grant")
        print(f"doctor setup: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return int(account[0])


def doctor_queries(services: object, shape: dict[str, float], rounds: int
                   ) -> dict[str, object]:
    """QIDO as a doctor of hospital H1 through ``QueryService.search`` (the access policy's
    restriction inside the statement, the grant look-up, the audit record): a granted
    resident's PatientID at another hospital, an ungranted one (nothing visible), and a
    date range (own hospital's studies plus the granted ones)."""
    import random

    from cloudfilm.services.archive.query import parse_search
    from cloudfilm.services.kernel.actor import Actor

    account = setup_doctor(shape)
    doctor = Actor(kind="doctor", subject=f"account:{account}", hospital_id=1,
                   hospital_code="H1", account_id=account, display="Dr Scale")
    query = services.query  # type: ignore[attr-defined]
    rng = random.Random(11)
    out: dict[str, object] = {}

    def timed(name: str, params: list[list[tuple[str, str]]], expect: int | None) -> None:
        samples = []
        cpu = time.process_time()
        for p in params:
            started = time.perf_counter()
            found = query.search(parse_search("study", p), actor=doctor)
            samples.append(time.perf_counter() - started)
            if expect is not None:
                assert len(found.matches) == expect, (name, p, len(found.matches))
        out[name] = percentiles(samples) | {
            "cpu_ms": round((time.process_time() - cpu) * 1000 / len(params), 2)}
        print(name, out[name], file=sys.stderr, flush=True)

    whole = granted_residents(shape)[::2]  # scope_all grants
    patients = int(shape["patients"])
    timed("doctor_qido_granted_patient",
          [[("PatientID", f"P{2 * rng.choice(whole)}")] for _ in range(rounds)], 2)
    timed("doctor_qido_ungranted_patient",
          [[("PatientID", f"P{2 * rng.randint(patients * 3 // 10, patients // 2 - 1) + 1}")]
           for _ in range(rounds)],
          0)
    timed("doctor_qido_date_range",
          [[("StudyDate", f"2021{m:02d}01-2021{m:02d}28"), ("limit", "100")]
           for m in [rng.randint(1, 12) for _ in range(rounds)]], None)
    return out


# --- ingest rate: this index against an empty one ------------------------------------------

EMPTY_DB = f"{DB}_empty"


def ingest_rate(url: str, objects: int, batch: int) -> dict[str, float]:
    """Objects/s through ``IngestService.ingest_files`` (the path STOW-RS, C-STORE and import
    share: blob durable, then the index transaction) into the index at ``url``: new
    studies of ``batch`` small CT slices each, and single objects (one transaction each)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from cloudfilm.app import build_services
    from cloudfilm.config import load_settings
    from cloudfilm.services.archive.ingest import IngestItem
    from cloudfilm.services.kernel.sender import Sender
    from synth import make_ct_series, to_bytes

    work = Path(tempfile.mkdtemp(prefix="scale-ingest-"))
    os.environ["CLOUDFILM_DATABASE_URL"] = url
    settings = load_settings(data_dir=work / "data")
    services = build_services(settings)
    files: list[Path] = []
    stamp = time.time_ns()
    for k in range(objects // batch):
        for i, ds in enumerate(make_ct_series(batch, patient_id=f"ING{stamp % 10**6}-{k}",
                                              patient_name="Ingest^Bench", size=64,
                                              seed=k)):
            path = work / f"{k}-{i}.dcm"
            path.write_bytes(to_bytes(ds))
            files.append(path)
    sender = Sender(hospital_code="H7", hospital_name="Hospital 7", door="stow")
    half = len(files) // 2
    started, cpu = time.perf_counter(), time.process_time()
    for k in range(0, half, batch):
        results = services.ingest.ingest_files([IngestItem(f) for f in files[k:k + batch]],
                                              sender=sender)
        assert all(getattr(r, "outcome", None) == "stored" for r in results), results[:2]
    batched, batched_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    for f in files[half:]:
        [result] = services.ingest.ingest_files([IngestItem(f)], sender=sender)
        assert getattr(result, "outcome", None) == "stored", result
    single, single_cpu = time.perf_counter() - started, time.process_time() - cpu
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    n = len(files) - half
    return {"batched_per_s": round(half / batched, 1),
            "batched_cpu_ms": round(batched_cpu * 1000 / half, 2),
            "single_per_s": round(n / single, 1), "single_cpu_ms": round(single_cpu * 1000 / n, 2)}


def ingest_comparison(rounds: int, objects: int, batch: int) -> dict[str, object]:
    """The same ingest into a freshly migrated empty index and into the filled one,
    alternating, ``rounds`` times; medians and the ratio (empty / filled rate)."""
    empty_url = URL.replace(f"/{DB}", f"/{EMPTY_DB}")
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {EMPTY_DB}")
        admin.execute(f"CREATE DATABASE {EMPTY_DB}")
    subprocess.run([str(ROOT / ".venv/bin/cloudfilm"), "db", "upgrade"], check=True,
                   env={**os.environ, "CLOUDFILM_DATABASE_URL": empty_url}, timeout=300,
                   capture_output=True)
    runs: dict[str, list[dict[str, float]]] = {"empty": [], "filled": []}
    for _ in range(rounds):
        for name, url in (("empty", empty_url), ("filled", URL)):
            runs[name].append(ingest_rate(url, objects, batch))
            print(name, runs[name][-1], file=sys.stderr, flush=True)
    os.environ["CLOUDFILM_DATABASE_URL"] = URL
    out: dict[str, object] = {}
    for name, values in runs.items():
        out[name] = {key: statistics.median(v[key] for v in values) for key in values[0]}
    for key in ("batched_per_s", "single_per_s"):
        out[f"slowdown_{key.removesuffix('_per_s')}"] = round(
            out["empty"][key] / out["filled"][key], 2)  # type: ignore[index]
    out["rounds"] = runs
    with psycopg.connect(ADMIN, autocommit=True) as admin:  # our engines still hold it
        admin.execute(f"DROP DATABASE IF EXISTS {EMPTY_DB} WITH (FORCE)")
    return out


# --- C-FIND through a real DIMSE association ----------------------------------------------

DIMSE_PORT = 27104  # this helper's port range
SCU = "SCALEH21"
HOSPITAL = 21  # the C-FIND caller's hospital (H21: 25 patients at 10 M, 5 at 1 M; SCU names it)


def c_find(shape: dict[str, float], rounds: int) -> dict[str, object]:
    """Study-level C-FIND by PatientID as one hospital's AE title, over one association to
    ``cloudfilm dimse`` on this index (its own process, as deployed)."""
    import shutil
    import signal
    import socket
    import tempfile

    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    data = Path(tempfile.mkdtemp(prefix="scale-dimse-"))
    env = {**os.environ, "CLOUDFILM_DATA_DIR": str(data)}
    exe = str(ROOT / ".venv/bin/cloudfilm")
    subprocess.run([exe, "peers", "add", SCU, "127.0.0.1", "104", "--hospital", f"H{HOSPITAL}"],
                   env=env, capture_output=True, timeout=120)  # exists already: fine
    proc = subprocess.Popen([exe, "dimse", "--ae-title", "SCALE", "--dicom-host", "127.0.0.1",
                             "--dicom-port", str(DIMSE_PORT)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", DIMSE_PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("cloudfilm dimse did not listen") from None
                time.sleep(0.3)
        from pynetdicom import evt

        def nodelay(event: Any) -> None:
            # As dimse_bench does (BENCHMARKING.md): without it every C-FIND waited ~40 ms
            # for a delayed ACK (Nagle), the 54-71 ms measured here before.
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,
                                                     1)

        ae = AE(ae_title=SCU)
        ae.add_requested_context(FIND)
        assoc = ae.associate("127.0.0.1", DIMSE_PORT, ae_title="SCALE",
                             evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
        assert assoc.is_established, "C-FIND association refused"
        # Patients of that hospital: patient g is at hospital 1 + g % 2000.
        mine = [g for g in range(HOSPITAL - 1, int(shape["patients"]) + 1, 2000) if g > 0]
        import random

        rng = random.Random(13)
        samples = []
        for i in range(rounds + 10):
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.PatientID = f"P{rng.choice(mine)}"
            for keyword in ("StudyInstanceUID", "PatientName", "StudyDate",
                            "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
                setattr(ident, keyword, "")
            started = time.perf_counter()
            answers = list(assoc.send_c_find(ident, FIND))
            if i >= 10:  # warm-up
                samples.append(time.perf_counter() - started)
            assert answers[-1][0].Status == 0 and len(answers) == 3, answers[-1][0]
        assoc.release()
        out = {"c_find_study_by_patient_id": percentiles(samples)}
        print(out, file=sys.stderr, flush=True)
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


def use_database(name: str) -> None:
    """Point the bench at ``name`` (and ``name_empty``): helpers share one server."""
    global DB, URL, EMPTY_DB
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"not a plain database name: {name!r}")
    DB, EMPTY_DB = name, f"{name}_empty"
    URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--database", default=DB,
                        help="PostgreSQL database to fill or reuse (the empty index for the "
                             "ingest comparison is DATABASE_empty); default $SCALE_BENCH_DB "
                             "or scale_bench")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the filled database")
    parser.add_argument("--fill-only", action="store_true", help="fill, measure nothing")
    parser.add_argument("--parts", nargs="+", choices=["queries", "doctor", "ingest"],
                        default=["queries", "ingest"])
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument("--ingest-objects", type=int, default=400,
                        help="per round and index: half in STOW-sized batches of 50, "
                             "half one by one")
    args = parser.parse_args()
    use_database(args.database)
    OUT.mkdir(exist_ok=True)
    shape_file = OUT / f"{DB}_shape.json"
    if args.reuse and shape_file.exists():
        shape = json.loads(shape_file.read_text())
    else:
        shape = fill(args.instances)
        shape_file.write_text(json.dumps(shape))
    if args.fill_only:
        print(json.dumps(shape, indent=2))
        return
    results: dict[str, object] = {"shape": shape, "load_before": os.getloadavg()}
    if "queries" in args.parts:
        results["queries"] = measure(shape, args.rounds)
    elif "doctor" in args.parts:
        results["queries"] = measure(shape, args.rounds, doctor_only=True)
    if "ingest" in args.parts:
        bench_env()
        results["ingest"] = ingest_comparison(args.ingest_rounds, args.ingest_objects, 50)
    results["load_after"] = os.getloadavg()
    (OUT / f"scale_bench-{'-'.join(args.parts)}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
