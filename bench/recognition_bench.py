"""Exam mutual recognition: p50/p95 of the check with N studies indexed, on PostgreSQL or
SQLite.

    .venv/bin/python bench/recognition_bench.py                     # 1,000,000 studies, PG
    .venv/bin/python bench/recognition_bench.py --database sqlite   # the same on SQLite
    .venv/bin/python bench/recognition_bench.py --studies 100000    # quick

Loads a synthetic province straight into a fresh ``bench_recognition`` database with
server-side ``INSERT ... SELECT generate_series`` (faster than COPY from Python for rows
that are pure arithmetic; on SQLite the same statements over a recursive CTE into
``bench/out/recognition_bench.sqlite``): 200 hospitals of three levels, ``studies/10``
residents, each linked to two hospitals' patient records, the studies spread over the
last two years and over the 19 seeded items, each classified under the current rules
(as the check leaves them), 90 % with a final report. Then ``ANALYZE`` (autovacuum is
off on this machine).

The check is called in-process (``RecognitionService.check``, no HTTP) by a hospital
system for a random resident's local ID and a random item; each call is one committed
write transaction: MPI look-ups, the stale-classification probe, the match through
``ix_study_recognition_patient_fk_item_code_study_date``, report statuses, the check row
and one hash-chained audit record. Results go to
``bench/out/recognition_bench[_sqlite].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from sqlalchemy import event, text  # noqa: E402

from cloudfilm.infrastructure.db import migrate  # noqa: E402
from cloudfilm.infrastructure.db.session import Database  # noqa: E402
from cloudfilm.services.access.actor import Actor  # noqa: E402
from cloudfilm.services.access.audit import AuditService  # noqa: E402
from cloudfilm.services.identity.protection import IdProtector  # noqa: E402
from cloudfilm.services.recognition import catalogue  # noqa: E402
from cloudfilm.services.recognition.service import (  # noqa: E402
    CheckRequest,
    RecognitionService,
)
from harness import PgCpuMeter, recreate_pg_database  # noqa: E402

DATABASE = "bench_recognition"
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
SQLITE_FILE = BENCH_DIR / "out" / "recognition_bench.sqlite"


def _sqlite(sql: str) -> str:
    """The PostgreSQL load statement for SQLite: generate_series becomes a recursive CTE,
    dates and arrays their SQLite spellings."""
    import re

    sql = sql.replace("now()", "CURRENT_TIMESTAMP").replace("true", "1")
    sql = sql.replace("now() - interval '1 day'", "datetime('now', '-1 day')")
    sql = sql.replace("CURRENT_TIMESTAMP - interval '1 day'", "datetime('now', '-1 day')")
    sql = re.sub(r"to_char\(current_date - \(\((.*?)\) % 730\), 'YYYYMMDD'\)",
                 r"strftime('%Y%m%d', 'now', '-' || ((\1) % 730) || ' days')", sql)

    def array(match: re.Match[str]) -> str:
        values = [v.strip() for v in match.group(1).split(",")]
        index = match.group(2)
        cases = " ".join(f"WHEN {n} THEN {v}" for n, v in enumerate(values, 1))
        return f"(CASE {index} {cases} END)"

    sql = re.sub(r"\(?ARRAY\[([^\]]*)\]\)?\[([^\]]*)\]", array, sql)
    # generate_series(a, b) g -> a recursive CTE named after the alias
    ctes = []
    for start, stop, alias in re.findall(r"generate_series\(([^,]+), ([^)]+)\) (\w+)", sql):
        ctes.append(f"{alias}(value) AS (SELECT {start} UNION ALL SELECT value + 1 FROM "
                    f"{alias} WHERE value < {stop})")
        sql = sql.replace(f"generate_series({start}, {stop}) {alias}", alias)
        sql = re.sub(rf"\b{alias}\b(?!\()", f"{alias}.value", sql)
        sql = sql.replace(f"FROM {alias}.value", f"FROM {alias}").replace(
            f", {alias}.value", f", {alias}").replace(f"JOIN {alias}.value", f"JOIN {alias}")
    if ctes:
        head, _, rest = sql.partition("SELECT")
        sql = f"{head}WITH RECURSIVE {', '.join(ctes)} SELECT{rest}"
    return sql
HOSPITALS = 200


def load(db: Database, studies: int, version: int, sqlite: bool = False) -> dict[str, float]:
    """Fill the database; returns seconds per step."""
    residents = max(studies // 10, 1)
    items = [i["code"] for i in catalogue.items()]
    item_array = "ARRAY[" + ",".join(f"'{c}'" for c in items) + "]"
    n_items = len(items)
    steps = {
        "hospital": f"""
            INSERT INTO hospital (id, code, name, created_at, level, grade, city, county,
                                  active, national_id_source, national_id_issuer,
                                  national_id_tag)
            SELECT g, 'H' || g, 'Hospital ' || g, now(),
                   (ARRAY['tertiary','secondary','primary'])[1 + g % 3], 'A', '', '', true,
                   'none', '', ''
            FROM generate_series(1, {HOSPITALS}) g""",
        "resident": f"""
            INSERT INTO resident (id, national_id_masked, name, name_search, birth_date, sex,
                                  phone, status, created_at, updated_at)
            SELECT g, '', '', '', '19700101', 'M', '', 'active', now(), now()
            FROM generate_series(1, {residents}) g""",
        # Two records per resident, at two different hospitals: ids 2r-1 and 2r.
        "patient": f"""
            INSERT INTO patient (id, hospital_id, patient_id, issuer_of_patient_id,
                                 patient_name, name_search, birth_date, sex, updated_at)
            SELECT 2 * r - 1 + k, CASE WHEN k = 0 THEN 1 + r % {HOSPITALS}
                                       ELSE 1 + (r % {HOSPITALS} + {HOSPITALS // 2})
                                            % {HOSPITALS} END,
                   'P' || r, '', '', '', '19700101', 'M', now()
            FROM generate_series(1, {residents}) r, generate_series(0, 1) k""",
        "patient_link": f"""
            INSERT INTO patient_link (patient_fk, resident_id, state, reason, source,
                                      updated_at)
            SELECT p, (p + 1) / 2, 'linked', '', 'bench', now()
            FROM generate_series(1, {2 * residents}) p""",
        # Study g belongs to patient 1 + g % patients, at that patient's hospital.
        "study": f"""
            INSERT INTO study (id, study_instance_uid, patient_fk, hospital_id, study_date,
                               study_time, accession_number, referring_physician_name,
                               study_description, study_id, institution_name, num_series,
                               num_instances, size_bytes, received_at, exam_at, updated_at,
                               attributes_json)
            SELECT g, '1.2.826.0.1.3680043.10.1.' || g, p.id, p.hospital_id,
                   to_char(current_date - ((g * 37) % 730), 'YYYYMMDD'), '101500',
                   'A' || g, '', '', '', '', 1, 100, 52428800,
                   now() - interval '1 day', now() - interval '1 day',
                   now() - interval '1 day', '{{}}'
            FROM generate_series(1, {studies}) g
            JOIN patient p ON p.id = 1 + g % {2 * residents}""",
        "study_recognition": f"""
            INSERT INTO study_recognition (study_fk, patient_fk, study_date, item_code,
                                           modality, body_region, procedure, rules_version,
                                           qc, classified_at)
            SELECT id, patient_fk, study_date, ({item_array})[1 + (id * 7) % {n_items}],
                   '', '', '', {version}, '', now()
            FROM study""",
        "report": """
            INSERT INTO report (public_id, hospital_id, report_key, study_fk, patient_fk,
                                study_instance_uid, accession_number, patient_id,
                                link_state, status, current_version, version_count, source,
                                title, modality, findings, impression, author, verifier,
                                received_at, updated_at, listed_at, search_text)
            SELECT 'r' || id, hospital_id, 'k' || id, id, patient_fk, study_instance_uid,
                   accession_number, '', 'linked', 'final', 1, 1, 'fhir', '', '', '', '',
                   '', '', now(), now(), now(), ''
            FROM study WHERE id % 10 <> 0""",
    }
    timings: dict[str, float] = {}
    for name, sql in steps.items():
        started = time.perf_counter()
        with db.engine.begin() as conn:
            conn.execute(text(_sqlite(sql) if sqlite else sql))
        timings[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {timings[name]} s", flush=True)
    started = time.perf_counter()
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    timings["analyze"] = round(time.perf_counter() - started, 1)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--reuse", action="store_true",
                        help="Keep the database a previous run loaded (same --studies)")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    sqlite = args.database == "sqlite"
    url = f"sqlite:///{SQLITE_FILE}" if sqlite else URL
    if not args.reuse:
        if sqlite:
            SQLITE_FILE.parent.mkdir(exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
        else:
            recreate_pg_database(DATABASE)
        migrate.upgrade(url)
    db = Database(url)
    protector = IdProtector(b"k" * 32, b"h" * 32)
    audit = AuditService(db, address_key=b"a" * 32)
    svc = RecognitionService(db, protector, audit, zone=ZoneInfo("Asia/Shanghai"),
                             settle_minutes=30)
    svc.items()  # seeds the catalogue: the rules version the load tags studies with
    with db.engine.connect() as conn:
        version = int(conn.exec_driver_sql("SELECT max(id) FROM recognition_change").scalar()
                      or 0)
    timings: dict[str, float] = {}
    load_started = time.perf_counter()
    if not args.reuse:
        print(f"loading {args.studies:,} studies ...", flush=True)
        timings = load(db, args.studies, version, sqlite)
    load_seconds = time.perf_counter() - load_started
    if sqlite:
        size = SQLITE_FILE.stat().st_size
    else:
        with db.engine.connect() as conn:
            size = conn.exec_driver_sql(f"SELECT pg_database_size('{DATABASE}')").scalar()
    residents = max(args.studies // 10, 1)
    rng = random.Random(15)
    items = [i["code"] for i in catalogue.items()]
    latencies: list[float] = []
    cpu: list[float] = []
    priors = 0
    # Warm-up (connection pool, plan cache), not counted.
    for _ in range(50):
        r = rng.randint(1, residents)
        actor = Actor(kind="hospital", subject=f"H{1 + r % HOSPITALS}",
                      hospital_id=1 + r % HOSPITALS, hospital_code=f"H{1 + r % HOSPITALS}")
        svc.check(actor, CheckRequest(patient_id=f"P{r}", item_code=rng.choice(items)))
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    def timed_check() -> None:
        nonlocal priors
        r = rng.randint(1, residents)
        hospital = 1 + r % HOSPITALS
        actor = Actor(kind="hospital", subject=f"H{hospital}", hospital_id=hospital,
                      hospital_code=f"H{hospital}")
        started, cpu_started = time.perf_counter(), time.process_time()
        result = svc.check(actor, CheckRequest(patient_id=f"P{r}",
                                               item_code=rng.choice(items)))
        latencies.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        priors += len(result.priors)

    # Round trips per check: every statement the engine sends (BEGIN/COMMIT aside); and,
    # on PostgreSQL, the backends' CPU per check. Neither depends on how loaded the machine
    # is, unlike the wall-clock percentiles.
    event.listen(db.engine, "before_cursor_execute", count)
    if sqlite:
        for _ in range(args.checks):
            timed_check()
        pg_cpu_ms = None
    else:
        with PgCpuMeter(DATABASE) as meter:
            for _ in range(args.checks):
                timed_check()
        pg_cpu_ms = round(meter.seconds * 1000 / args.checks, 2)
    event.remove(db.engine, "before_cursor_execute", count)
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    explain = "EXPLAIN QUERY PLAN" if sqlite else "EXPLAIN"
    with db.engine.connect() as conn:
        plan = "\n".join(str(r[-1] if sqlite else r[0]) for r in conn.exec_driver_sql(
            f"{explain} SELECT s.id, r.item_code, (SELECT max(p.id) FROM report p "
            "WHERE p.study_fk = s.id) FROM study s "
            "JOIN hospital h ON h.id = s.hospital_id "
            "LEFT JOIN study_recognition r ON r.study_fk = s.id "
            "WHERE s.patient_fk IN (SELECT patient_fk FROM patient_link WHERE "
            "resident_id = 7 AND state = 'linked') "
            "AND s.study_date BETWEEN '20250101' AND '20251231' "
            "ORDER BY s.study_date DESC, s.id"))
    out = {"database": args.database, "studies": args.studies, "residents": residents,
           "checks": args.checks,
           "p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
           "max_ms": round(latencies[-1], 2), "priors_offered": priors,
           # The bench process's own CPU per check (Python, SQLAlchemy, psycopg); the rest
           # of the wall time is PostgreSQL and waiting for a core on this shared machine.
           "client_cpu_ms_median": round(statistics.median(cpu), 2),
           "server_cpu_ms_per_check": pg_cpu_ms,
           "statements_per_check": round(statements[0] / args.checks, 2),
           "load_average_1min": round(os.getloadavg()[0], 2),
           "load_seconds": round(load_seconds, 1), "load_steps": timings,
           "database_bytes": size, "match_plan": plan}
    (BENCH_DIR / "out").mkdir(exist_ok=True)
    name = "recognition_bench_sqlite.json" if sqlite else "recognition_bench.json"
    (BENCH_DIR / "out" / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    db.dispose()


if __name__ == "__main__":
    main()
