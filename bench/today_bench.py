"""Today's live dashboard figures (issue 17) against a day of ``--audit`` audit reads, on
PostgreSQL: the use counters read from scratch (a fresh process's first refresh) and kept
(a refresh after ``--new`` more records), today's study and report rows, and the "use"
table through the service with every call a refresh.

``--phase fill`` creates ``--db`` (schema by the migrations) with 200 hospitals,
``--studies`` of today's studies and ``--audit`` image reads of them today (a fill: run it
outside the lock, niced); ``--phase measure`` times (under the lock)::

    nice -n 15 .venv/bin/python bench/today_bench.py --db today17_bench --phase fill
    flock /work/notes/bench.lock .venv/bin/python bench/today_bench.py --db today17_bench \\
        --phase measure
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudfilm.config import SecuritySettings, Settings  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"
SECURITY = SecuritySettings(
    national_id_key=SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
    national_id_hmac_key=SecretStr("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
    admin_token=SecretStr("bench-admin-token"))


def _services(db: str) -> Any:
    from cloudfilm.app import build_services

    return build_services(Settings(data_dir=Path(tempfile.mkdtemp(prefix="today_bench_")),
                                   database_url=PG + db, security=SECURITY))


def _append_reads(conn: Any, n: int, studies: int) -> None:
    """``n`` image reads of today's studies (3 % under a grant at another hospital, 10 %
    downloads, 5 % sign-ins), stamped now; the chain's hashes are not what is measured."""
    seq = int(conn.execute(text("SELECT coalesce(max(seq), 0) FROM audit_event")).scalar())
    conn.execute(text(f"""INSERT INTO audit_event (seq, at, actor_kind, actor_subject,
        actor_hospital_id, actor_hospital_code, actor_display, actor_department,
        address_hash, action, resource_type, resource_uid, resident_id, outcome, reason,
        detail, prev_hash, hash)
        SELECT {seq} + g, now(), 'doctor', 'account:' || (g % 5000),
          CASE WHEN g % 33 = 0 THEN 1 + s.hospital_id % 200 ELSE s.hospital_id END, '', '',
          '', '', CASE WHEN g % 20 = 0 THEN 'sign_in' WHEN g % 10 = 0 THEN 'download'
          ELSE 'retrieve' END, 'study', s.study_instance_uid, NULL,
          CASE WHEN g % 20 = 0 THEN 'success' ELSE 'allowed' END,
          CASE WHEN g % 33 = 0 THEN 'grant' ELSE 'own-hospital' END, '{{}}', '', ''
        FROM generate_series(1, {n}) g
        JOIN study s ON s.id = 1 + (g::bigint * 7919) % {studies}"""))
    conn.execute(text("UPDATE audit_chain_head SET seq = (SELECT max(seq) FROM audit_event)"))


def fill(db: str, studies: int, audit: int) -> None:
    with create_engine(PG + "postgres", isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}"'))
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    _services(db).health._db.dispose()  # migrates
    engine = create_engine(PG + db)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("""INSERT INTO hospital (id, code, name, created_at, level, grade,
            city, county, active, national_id_source, national_id_issuer, national_id_tag,
            public, contact_phone, alert_webhook)
            SELECT g, 'H' || g, 'Hospital ' || g, now() - interval '500 days', 'tertiary',
              'A', '杭州', 'County ' || (g % 9), true, 'none', '', '', true, '', ''
            FROM generate_series(1, 200) g"""))
        conn.execute(text("""INSERT INTO patient (id, hospital_id, patient_id,
            issuer_of_patient_id, patient_name, name_search, birth_date, sex, updated_at)
            SELECT g, g, 'P' || g, '', '', '', '', '', now() FROM generate_series(1, 200) g"""))
        # Today's studies: exam within the local day so far, arrival up to 16 hours later.
        conn.execute(text(f"""INSERT INTO study (id, study_instance_uid, patient_fk,
            hospital_id, study_date, study_time, accession_number, referring_physician_name,
            study_description, study_id, institution_name, num_series, num_instances,
            size_bytes, received_at, exam_at, updated_at, attributes_json)
            SELECT g, '2.25.' || g, h, h, '', '', 'ACC' || g, '', '', '', '', 1, 120,
              120 * 520000::bigint, e + d, e, e + d, '{{}}'
            FROM (SELECT g, 1 + g % 200 AS h,
                    date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE
                      'Asia/Shanghai' + random() * (now() - date_trunc('day', now() AT TIME
                      ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai') AS e,
                    random() * 16 * interval '1 hour' AS d
                  FROM generate_series(1, {studies}) g) s"""))
        conn.execute(text(f"""INSERT INTO series (id, series_instance_uid, study_fk, modality,
            series_number, series_description, body_part_examined,
            performed_procedure_step_start_date, performed_procedure_step_start_time,
            num_instances, received_at, updated_at, attributes_json)
            SELECT id, study_instance_uid || '.1', id, 'CT', 1, '', '', '', '',
              num_instances, received_at, received_at, '{{}}' FROM study
            WHERE id <= {studies}"""))
        _append_reads(conn, audit, studies)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"filled {studies:,} studies, {audit:,} audit reads: "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def _timed(fn: Any, reps: int) -> str:
    took = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    p95 = took[min(len(took) - 1, round(0.95 * (len(took) - 1)))]
    return f"p50 {statistics.median(took):.1f} ms, p95 {p95:.1f} ms, n={reps}"


def measure(db: str, studies: int, new: int, reps: int) -> None:
    from cloudfilm.infrastructure.db import stats_repository as repo
    from cloudfilm.services.kernel.actor import Actor
    from cloudfilm.services.stats.figures import USE_CACHE_S, StatsService

    services = _services(db)
    sql = services.health._db
    stats = services.stats
    now = datetime.now(UTC)
    start, end = stats.rollup.clock.bounds(stats.rollup.clock.today(now))
    deadline = stats.options.deadline_hours * 3600
    with sql.reading() as conn:
        day = conn.execute(text("SELECT count(*) FROM audit_event WHERE at >= :s"),
                           {"s": start}).scalar()
    print(f"audit records today: {day:,}; load {os.getloadavg()}", flush=True)
    tally = repo.AuditTally()

    def scratch() -> None:
        with sql.reading() as conn:
            repo.use_day(conn, start, end, now)

    def kept() -> None:
        with sql.reading() as conn:
            repo.use_day(conn, start, end, now, tally)

    def append() -> None:
        with sql.writing() as conn:
            _append_reads(conn, new, studies)

    print(f"use_day from scratch (first refresh): {_timed(scratch, 3)}", flush=True)
    kept()
    print(f"use_day kept, nothing new: {_timed(kept, reps)}", flush=True)

    def append_then_kept() -> None:
        append()
        started = time.perf_counter()
        kept()
        refresh.append((time.perf_counter() - started) * 1000)

    refresh: list[float] = []
    _timed(append_then_kept, reps)
    refresh.sort()
    print(f"use_day kept, {new:,} new records a refresh: p50 "
          f"{statistics.median(refresh):.1f} ms, max {refresh[-1]:.1f} ms, n={reps}",
          flush=True)
    with sql.reading() as conn:
        scratch_use = repo.use_day(conn, start, end, now)
        kept_use = repo.use_day(conn, start, end, now, tally)
    print(f"kept == from scratch: {scratch_use == kept_use}", flush=True)

    def live() -> None:
        with sql.reading() as conn:
            repo.study_day(conn, start, end, now, deadline, None)
            repo.report_day(conn, start, end, deadline, None)

    print(f"today's study + report rows ({studies:,} studies): {_timed(live, reps)}",
          flush=True)
    clock = [now]
    service = StatsService(sql, stats.rollup, stats._audit, clock=lambda: clock[0])
    admin = Actor(kind="admin", subject="admin:bench")
    started = time.perf_counter()
    service.warm()
    print(f"service warm (a process's first read of today): "
          f"{(time.perf_counter() - started) * 1000:.0f} ms", flush=True)

    def use_table() -> None:
        clock[0] += timedelta(seconds=USE_CACHE_S + 1)  # every call a refresh
        with sql.writing() as conn:
            _append_reads(conn, new, studies)
        service.table(admin, "use", days=7)

    print(f"'use' table, each call a refresh after {new:,} new records (append included): "
          f"{_timed(use_table, reps)}; load {os.getloadavg()}", flush=True)
    sql.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="today_bench")
    parser.add_argument("--phase", choices=("fill", "measure"), action="append")
    parser.add_argument("--studies", type=int, default=30_000)
    parser.add_argument("--audit", type=int, default=534_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    for phase in args.phase or ("fill", "measure"):
        if phase == "fill":
            fill(args.db, args.studies, args.audit)
        else:
            measure(args.db, args.studies, args.new, args.reps)


if __name__ == "__main__":
    main()
