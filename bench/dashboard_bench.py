"""The commission's dashboard at province scale (issue 17), on PostgreSQL.

Index rows only, no pixels, generated server-side (``INSERT ... SELECT generate_series``)
into the database ``--db`` (default ``cloudfilm_dash_bench``): 2,000 hospitals in 11 cities
(90 counties), ``--studies`` studies (one series each; a report for 80 %) with exam times
over ``--days`` days, 85 % uploaded within 12 hours. The load is chunked (1 M studies per
transaction), resumable, and runs with the three tables' secondary indexes and constraints
dropped, then rebuilt once by sorting (what a bulk restore does); ``--budget`` stops loading
after the chunk that passes it (a fill: run it outside the lock, niced).

Phases (``--phase``, default all of them in this order):

- ``load``: generate (resumable) and rebuild indexes, ``VACUUM ANALYZE``;
- ``rollup``: the full rollup (first start of the dashboard on an existing archive);
- ``figures``: every dashboard table (each ``/api/v1/stats`` name) for the province, a
  city bureau's area and a hospital administrator, over 30, 90 and 365 days: p50/p95 of
  ``--reps`` service calls (scope, audit record, rollup reads, today's live rows);
- ``explain``: ``EXPLAIN (ANALYZE, BUFFERS)`` of every statement of the slowest figures;
- ``day``: one more day of ``--day-studies`` studies (+ series, reports) and
  ``--day-audit`` audit reads (a fill: run it outside the lock, niced);
- ``nightly``: that day (added now if ``day`` did not run) rolled incrementally (the
  nightly job: the changed days and the settling ones), extrapolated linearly to 30 M
  records;
- ``page``: ``/dashboard`` in headless Chromium on loopback: navigation start to every
  chart drawn (``document.body.dataset.charts``), per scope and period.

``--reuse`` keeps the database between runs (later phases on the loaded one); ``--drop``
drops it and exits. Fill outside the lock, niced, then measure under it::

    nice -n 15 .venv/bin/python bench/dashboard_bench.py --db dash_10m \\
        --studies 10000000 --phase load --phase rollup --reuse
    flock /work/notes/bench.lock .venv/bin/python bench/dashboard_bench.py --db dash_10m \\
        --studies 10000000 --phase figures --phase page --reuse
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, event, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudfilm.config import HttpSettings, SecuritySettings, Settings  # noqa: E402

PG = os.environ.get("CLOUDFILM_TEST_PG_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEFAULT_DB = "cloudfilm_dash_bench"
DB = os.environ.get("DASH_BENCH_DB", DEFAULT_DB)


def _out(db: str) -> Path:
    # Another database name gives another results file (runs at two scales side by side).
    return ROOT / "bench" / "out" / ("dashboard_bench.json" if db == DEFAULT_DB
                                     else f"{db}.json")


OUT = _out(DB)
CITIES = ("杭州", "宁波", "温州", "嘉兴", "湖州", "绍兴", "金华", "衢州", "舟山", "台州", "丽水")
MODALITIES = ("CT", "MR", "DX", "US", "MG", "CR")
LOADED = ("study", "series", "report")
CHUNK = 1_000_000
PHASES = ("load", "rollup", "figures", "explain", "day", "nightly", "page")
WHO = {"province": ("bench-admin", "admin", None, ""),
       "area": ("bench-bureau", "bureau", None, "杭州"),
       "hospital": ("bench-hadmin", "hospital_admin", "H00001", "")}
PASSWORD = "bench-password-1"


def _sql(conn: Any, statement: str, **params: Any) -> float:
    started = time.perf_counter()
    conn.execute(text(statement), params)
    return time.perf_counter() - started


def _meta(conn: Any) -> dict[str, str]:
    conn.execute(text("CREATE TABLE IF NOT EXISTS dash_bench_meta (key text PRIMARY KEY, "
                      "value text NOT NULL)"))
    return dict(conn.execute(text("SELECT key, value FROM dash_bench_meta")).all())


def _set_meta(conn: Any, key: str, value: str) -> None:
    conn.execute(text("INSERT INTO dash_bench_meta VALUES (:k, :v) ON CONFLICT (key) DO "
                      "UPDATE SET value = excluded.value"), {"k": key, "v": value})


def _registry(conn: Any, now: datetime) -> None:
    _sql(conn, """INSERT INTO hospital (id, code, name, created_at, level, grade, city,
        county, active, national_id_source, national_id_issuer, national_id_tag, public,
        contact_phone, alert_webhook)
        SELECT g, 'H' || lpad(g::text, 5, '0'), 'Hospital ' || g, :now - interval '500 days',
          (ARRAY['tertiary','secondary','primary'])[1 + g % 3], 'A',
          (CAST(:cities AS text[]))[1 + g % 11], 'County ' || (g % 90), true, 'none', '', '',
          g % 7 <> 0, '', ''
        FROM generate_series(1, 2000) g""", now=now, cities=list(CITIES))
    _sql(conn, """INSERT INTO patient (id, hospital_id, patient_id, issuer_of_patient_id,
        patient_name, name_search, birth_date, sex, updated_at)
        SELECT g, g, 'P' || g, '', '', '', '', '', :now FROM generate_series(1, 2000) g""",
         now=now)


def _drop_secondary(conn: Any) -> str:
    """Drop the loaded tables' secondary indexes, unique and foreign-key constraints
    (keeping primary keys); return what rebuilds them."""
    tables = list(LOADED)
    constraints = conn.execute(text("""
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE conrelid::regclass::text = ANY(:t)
          AND contype IN ('u', 'f') ORDER BY contype DESC"""), {"t": tables}).all()
    owned = {c[1] for c in constraints} | {r[0] for r in conn.execute(text(
        "SELECT conname FROM pg_constraint WHERE contype = 'p' "
        "AND conrelid::regclass::text = ANY(:t)"), {"t": tables})}
    indexes = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                "WHERE tablename = ANY(:t)"), {"t": tables}).all()
    indexes = [(n, d) for n, d in indexes if n not in owned]
    for table, name, _kind, _def in constraints:
        conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for name, _def in indexes:
        conn.execute(text(f'DROP INDEX "{name}"'))
    return json.dumps({"constraints": [list(c) for c in constraints],
                       "indexes": [list(i) for i in indexes]})


def _rebuild(url: str, ddl: str, deadline: float) -> bool:
    """Recreate what ``_drop_secondary`` dropped, one statement at a time (resumable);
    foreign keys come back NOT VALID (the generator wrote them consistent)."""
    plan = json.loads(ddl)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        for name, definition in plan["indexes"]:
            if conn.execute(text("SELECT 1 FROM pg_indexes WHERE indexname = :n"),
                            {"n": name}).first():
                continue
            if time.monotonic() > deadline:
                return False
            print(f"  index {name}: {_sql(conn, definition):.0f} s", flush=True)
        for table, name, kind, definition in sorted(plan["constraints"],
                                                    key=lambda c: c[2] != "u"):
            if conn.execute(text("SELECT 1 FROM pg_constraint WHERE conname = :n"),
                            {"n": name}).first():
                continue
            if time.monotonic() > deadline:
                return False
            tail = " NOT VALID" if kind == "f" else ""
            took = _sql(conn, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" '
                              f"{definition}{tail}")
            print(f"  constraint {name}: {took:.0f} s", flush=True)
        for table in (*LOADED, "patient", "hospital"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
        started = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        print(f"  vacuum analyze: {time.perf_counter() - started:.0f} s", flush=True)
    engine.dispose()
    return True


def _chunk(conn: Any, first: int, last: int, days: int, now: datetime) -> None:
    _sql(conn, f"""INSERT INTO study (id, study_instance_uid, patient_fk,
        hospital_id, study_date, study_time, accession_number, referring_physician_name,
        study_description, study_id, institution_name, num_series, num_instances,
        size_bytes, received_at, exam_at, updated_at, attributes_json)
        SELECT g, '2.25.' || g, h, h, '', '', 'ACC' || g, '', '', '', '', 1,
          50 + (g % 300), (50 + (g % 300)) * 520000::bigint,
          e + d, e, e + d, '{{}}'
        FROM (SELECT g, 1 + (g::bigint * 7919) % 1998 AS h,
                :now - (random() * {days} * 86400 + 86400) * interval '1 second' AS e,
                CASE WHEN random() < 0.85 THEN random() * 11 ELSE 12 + random() * 60 END
                  * interval '1 hour' AS d
              FROM generate_series({first}, {last}) g) s""", now=now)
    _sql(conn, f"""INSERT INTO series (id, series_instance_uid, study_fk, modality,
        series_number, series_description, body_part_examined,
        performed_procedure_step_start_date, performed_procedure_step_start_time,
        num_instances, received_at, updated_at, attributes_json)
        SELECT id, study_instance_uid || '.1', id, (CAST(:mods AS text[]))[1 + id % 6],
          1, '', '', '', '', num_instances, received_at, received_at, '{{}}' FROM study
        WHERE id BETWEEN {first} AND {last}""", mods=list(MODALITIES))
    _sql(conn, f"""INSERT INTO report (public_id, hospital_id, report_key, study_fk,
        patient_fk, study_instance_uid, accession_number, patient_id, link_state, status,
        current_version, version_count, source, title, modality, findings, impression,
        author, verifier, exam_at, issued_at, received_at, updated_at, linked_at,
        listed_at, search_text)
        SELECT 'r' || id, hospital_id, 'k' || id, id, patient_fk, study_instance_uid,
          accession_number, '', 'linked', 'final', 1, 1, 'fhir', '', '', '', '', '', '',
          exam_at, exam_at + interval '5 hours', received_at + interval '4 hours',
          received_at + interval '4 hours', received_at, exam_at, ''
        FROM study WHERE id BETWEEN {first} AND {last} AND id % 5 <> 0""")


def load(url: str, studies: int, days: int, budget: float) -> bool:
    """Generate up to ``studies`` studies (resuming a previous run) and rebuild the
    indexes; False when the time budget ran out first (run again to continue)."""
    deadline = time.monotonic() + budget
    engine = create_engine(url)
    with engine.begin() as conn:
        meta = _meta(conn)
        if "now" not in meta:
            meta["now"] = datetime.now(UTC).isoformat()
            _set_meta(conn, "now", meta["now"])
            _registry(conn, datetime.fromisoformat(meta["now"]))
        if "ddl" not in meta and "indexed" not in meta:
            meta["ddl"] = _drop_secondary(conn)
            _set_meta(conn, "ddl", meta["ddl"])
    now = datetime.fromisoformat(meta["now"])
    done = True
    while True:
        with engine.begin() as conn:
            loaded = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM study"))
                         .scalar() or 0)
            if loaded >= studies:
                break
            if time.monotonic() > deadline:
                done = False
                break
            last = min(studies, loaded + CHUNK)
            started = time.perf_counter()
            _chunk(conn, loaded + 1, last, days, now)
        print(f"  studies {loaded + 1:,}-{last:,} (+ series, reports): "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    engine.dispose()
    if done and "indexed" not in meta:
        done = _rebuild(url, meta["ddl"], deadline)
        if done:
            with create_engine(url).begin() as conn:
                _set_meta(conn, "indexed", datetime.now(UTC).isoformat())
                conn.execute(text("DELETE FROM dash_bench_meta WHERE key = 'ddl'"))
    return done


def add_day(url: str, day_studies: int, day_audit: int, now: datetime) -> int:
    """One more (yesterday's) day of studies, series, reports and audit reads."""
    engine = create_engine(url)
    with engine.begin() as conn:
        first = int(conn.execute(text("SELECT max(id) FROM study")).scalar() or 0) + 1
        last = first + day_studies - 1
        _sql(conn, f"""INSERT INTO study (id, study_instance_uid, patient_fk, hospital_id,
            study_date, study_time, accession_number, referring_physician_name,
            study_description, study_id, institution_name, num_series, num_instances,
            size_bytes, received_at, exam_at, updated_at, attributes_json)
            SELECT g, '2.25.' || g, h, h, '', '', 'ACC' || g, '', '', '', '', 1, 120,
              120 * 520000::bigint, e + d, e, :now, '{{}}'
            FROM (SELECT g, 1 + (g::bigint * 7919) % 1998 AS h,
                    date_trunc('day', :now AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE
                      'Asia/Shanghai' - interval '1 day' + random() * interval '20 hours' AS e,
                    random() * 16 * interval '1 hour' AS d
                  FROM generate_series({first}, {last}) g) s""", now=now)
        _sql(conn, f"""INSERT INTO series (id, series_instance_uid, study_fk, modality,
            series_number, series_description, body_part_examined,
            performed_procedure_step_start_date, performed_procedure_step_start_time,
            num_instances, received_at, updated_at, attributes_json)
            SELECT id, study_instance_uid || '.1', id, (CAST(:mods AS text[]))[1 + id % 6],
              1, '', '', '', '',
              num_instances, received_at, received_at, '{{}}' FROM study
            WHERE id BETWEEN {first} AND {last}""", mods=list(MODALITIES))
        _sql(conn, f"""INSERT INTO report (public_id, hospital_id, report_key, study_fk,
            patient_fk, study_instance_uid, accession_number, patient_id, link_state, status,
            current_version, version_count, source, title, modality, findings, impression,
            author, verifier, exam_at, issued_at, received_at, updated_at, linked_at,
            listed_at, search_text)
            SELECT 'r' || id, hospital_id, 'k' || id, id, patient_fk, study_instance_uid,
              accession_number, '', 'linked', 'final', 1, 1, 'fhir', '', '', '', '', '', '',
              exam_at, exam_at, exam_at + interval '3 hours', :now, :now, exam_at, ''
            FROM study WHERE id BETWEEN {first} AND {last} AND id % 5 <> 0""", now=now)
        seq = conn.execute(text("SELECT coalesce(max(seq), 0) FROM audit_event")).scalar()
        # Image reads by doctors (own hospital, 3 % under a grant elsewhere); the chain's
        # hashes are not what the bench measures (the rollup never reads them).
        _sql(conn, f"""INSERT INTO audit_event (seq, at, actor_kind, actor_subject,
            actor_hospital_id, actor_hospital_code, actor_display, actor_department,
            address_hash, action, resource_type, resource_uid, resident_id, outcome, reason,
            detail, prev_hash, hash)
            SELECT {seq} + g, s.received_at + interval '1 hour', 'doctor',
              'account:' || (g % 50000), CASE WHEN g % 33 = 0 THEN 1 + (s.hospital_id % 1998)
              ELSE s.hospital_id END, '', '', '', '', 'retrieve', 'study',
              s.study_instance_uid, NULL, 'allowed',
              CASE WHEN g % 33 = 0 THEN 'grant' ELSE 'own-hospital' END, '{{}}', '', ''
            FROM generate_series(1, {day_audit}) g
            JOIN study s ON s.id = {first} + (g % {day_studies})""")
        # Later appenders continue after these rows (the bench's chain is not verifiable).
        conn.execute(text("UPDATE audit_chain_head SET seq = (SELECT max(seq) FROM "
                          "audit_event)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    reports = day_studies - day_studies // 5
    return 2 * day_studies + reports + day_audit


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    global DB, OUT
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--day-studies", type=int, default=100_000)
    parser.add_argument("--day-audit", type=int, default=500_000)
    parser.add_argument("--reps", type=int, default=40,
                        help="Timed calls per figure (after a warm one): p95 of 40 is the "
                             "third slowest, not the single slowest.")
    parser.add_argument("--phase", action="append", choices=PHASES,
                        help="Run only these phases (repeatable); default all.")
    parser.add_argument("--budget", type=float, default=1e9,
                        help="Seconds of loading after which the load phase stops.")
    parser.add_argument("--explain", default="",
                        help="Figures to explain: scope:days:name,... (default the slowest).")
    parser.add_argument("--db", default=DB,
                        help="Database name (default $DASH_BENCH_DB or cloudfilm_dash_bench).")
    parser.add_argument("--reuse", action="store_true", help="Keep the database.")
    parser.add_argument("--drop", action="store_true", help="Drop the database and exit.")
    args = parser.parse_args()
    phases = args.phase or list(PHASES)
    DB, OUT = args.db, _out(args.db)

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                              {"d": DB}).first()
        if args.drop or (exists and not args.reuse):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
            exists = None
        if args.drop:
            return
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{DB}"'))
    url = PG.rsplit("/", 1)[0] + f"/{DB}"
    try:
        run(url, args, phases)
    finally:
        if not args.reuse:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        admin.dispose()


def _results() -> dict[str, Any]:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def _save(key: str, value: Any) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    results = _results()
    results[key] = value
    OUT.write_text(json.dumps(results, indent=1, ensure_ascii=False))


def run(url: str, args: argparse.Namespace, phases: list[str]) -> None:
    from cloudfilm.app import build_services, freeze_startup_objects
    from cloudfilm.infrastructure.db import migrate

    migrate.upgrade(url)
    print(f"load average {load_avg()}", flush=True)
    if "load" in phases:
        print(f"loading {args.studies:,} studies over {args.days} days ...", flush=True)
        started = time.perf_counter()
        done = load(url, args.studies, args.days, args.budget)
        print(f"  {'loaded' if done else 'partly loaded (run again)'} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        if not done:
            return
    with create_engine(url).connect() as conn:
        meta = _meta(conn)
        conn.commit()
        count = conn.execute(text("SELECT count(*) FROM study")).scalar()
    now = datetime.fromisoformat(meta["now"])
    print(f"database: {count:,} studies, generated {meta['now']}", flush=True)
    data = Path(tempfile.mkdtemp(prefix="dash-bench-"))
    settings = Settings(
        data_dir=data, database_url=url, auto_migrate=False,
        security=SecuritySettings(
            national_id_key=SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
            national_id_hmac_key=SecretStr("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
            admin_token=SecretStr("bench-admin-token"), local_mode="closed"),
        http=HttpSettings(allowed_hosts=["127.0.0.1", "localhost"]))
    services = build_services(settings)
    # What `cloudfilm serve` does before answering: without it every full collection
    # walks the ~270,000 start-up objects (~200 ms here), on whichever call it lands.
    freeze_startup_objects()
    stats = services.stats
    assert stats is not None
    if "rollup" in phases:
        result = stats.rollup.run(full=True)
        print(f"full rollup: {len(result.days)} days in {result.seconds:.1f} s "
              f"(load {load_avg()})", flush=True)
        _save("full_rollup", {"studies": count, "days": len(result.days),
                              "seconds": round(result.seconds, 1), "load": load_avg()})
        # What autovacuum does after a backfill's inserts (its insert threshold): the
        # visibility map a unit's index-only day reads need (0032).
        started = time.perf_counter()
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            for table in ("stats_study_day", "stats_report_day", "stats_study_month",
                          "stats_report_month"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
        print(f"  vacuum analyze of the rollup tables: {time.perf_counter() - started:.0f} s",
              flush=True)
    actors = _actors(services)
    if "figures" in phases:
        figures(stats, actors, args.reps)
    if "explain" in phases:
        explain(stats, actors, args.explain)
    if "day" in phases:
        print(f"\nadding one day of {args.day_studies:,} studies + series + reports and "
              f"{args.day_audit:,} audit reads ...", flush=True)
        started = time.perf_counter()
        records = add_day(url, args.day_studies, args.day_audit, now)
        with create_engine(url).begin() as conn:
            _set_meta(conn, "day_records", str(records))
        print(f"  {records:,} records in {time.perf_counter() - started:.0f} s", flush=True)
    if "nightly" in phases:
        with create_engine(url).begin() as conn:
            added = _meta(conn).get("day_records")
            conn.execute(text("DELETE FROM dash_bench_meta WHERE key = 'day_records'"))
        if added:
            records = int(added)
            print(f"\nnightly: the day added before ({records:,} records) ...", flush=True)
        else:
            print(f"\nnightly: one day of {args.day_studies:,} studies + series + reports "
                  f"and {args.day_audit:,} audit reads ...", flush=True)
            records = add_day(url, args.day_studies, args.day_audit, now)
        result = stats.rollup.run()
        per_million = result.seconds / records * 1e6
        print(f"  incremental rollup of {len(result.days)} day(s), {records:,} records: "
              f"{result.seconds:.1f} s -> {per_million:.2f} s per million records; "
              f"30 M records ~ {per_million * 30 / 60:.1f} min (linear extrapolation); "
              f"load {load_avg()}", flush=True)
        _save("nightly", {"records": records, "days": len(result.days),
                          "seconds": round(result.seconds, 1),
                          "minutes_per_30m": round(per_million * 30 / 60, 1),
                          "load": load_avg()})
    if "page" in phases:
        page_load(services, {who: a.token for who, a in actors.items()})
    services.health._db.dispose()


def _actors(services: Any) -> dict[str, Any]:
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.access.actor import LOCAL_OPERATOR
    from cloudfilm.services.errors import AlreadyExistsError

    out = {}
    for who, (username, kind, code, area) in WHO.items():
        with contextlib.suppress(AlreadyExistsError):  # --reuse: made by an earlier run
            services.accounts.create_account(NewAccount(
                kind=kind, username=username, password=PASSWORD, display_name=username,
                hospital_code=code, area=area), by=LOCAL_OPERATOR)
        out[who] = services.accounts.sign_in_password(username, PASSWORD, requester="bench")
    return out


def figures(stats: Any, actors: dict[str, Any], reps: int) -> None:
    print(f"\nfigure p50 / p95 ms of {reps} calls (service call incl. scope + audit record), "
          f"load {load_avg()}")
    # The audit record each read commits (an fsync) is timed apart too: on this shared
    # disk it is most of a small figure's time.
    audit = stats._audit
    write = audit.write
    spent: list[float] = []

    def timed_write(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return write(*a, **k)
        finally:
            spent.append((time.perf_counter() - t0) * 1000)

    audit.write = timed_write
    # The interpreter's collections are timed too: a full one in a process holding the
    # whole application lands on whichever call allocates at that moment.
    collecting: list[float] = []
    collected: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collecting.append(time.perf_counter())
        elif collecting:
            collected.append((time.perf_counter() - collecting.pop()) * 1000)

    gc.callbacks.append(on_gc)
    rows = []
    try:
        for who, signed in actors.items():
            for days in (30, 90, 365):
                for name in stats.TABLES:
                    stats.table(signed.actor, name, days=days)  # warm
                    times, bare, gcs = [], [], []
                    for _ in range(reps):
                        spent.clear()
                        collected.clear()
                        t0 = time.perf_counter()
                        stats.table(signed.actor, name, days=days)
                        times.append((time.perf_counter() - t0) * 1000)
                        bare.append(times[-1] - sum(spent))
                        gcs.append(sum(collected))
                    rows.append({"scope": who, "days": days, "figure": name,
                                 "p50": round(statistics.median(times), 1),
                                 "p95": round(p95(times), 1),
                                 "max": round(max(times), 1),
                                 "p95_without_audit": round(p95(bare), 1),
                                 "gc_max": round(max(gcs), 1)})
                    print(f"  {who:<8} {days:>3}d {name:<17} {statistics.median(times):7.1f} "
                          f"{p95(times):7.1f} max {max(times):7.1f}  (without audit commit "
                          f"p95 {p95(bare):6.1f}; gc max {max(gcs):5.1f})", flush=True)
    finally:
        audit.write = write
        gc.callbacks.remove(on_gc)
    worst = max(rows, key=lambda r: r["p95"])
    print(f"worst figure p95: {worst['p95']} ms ({worst['scope']} {worst['days']}d "
          f"{worst['figure']}); over 200 ms: "
          f"{sum(1 for r in rows if r['p95'] >= 200)} of {len(rows)}; load {load_avg()}")
    _save("figures", {"rows": rows, "load": load_avg(), "reps": reps})


def explain(stats: Any, actors: dict[str, Any], which: str) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the chosen figures run."""
    if which:
        chosen = [tuple(w.split(":")) for w in which.split(",")]
    else:
        rows = sorted(_results().get("figures", {}).get("rows", []), key=lambda r: -r["p95"])
        chosen = [(r["scope"], str(r["days"]), r["figure"]) for r in rows[:5]]
    engine = stats._db.engine
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    for who, days, name in chosen:
        captured.clear()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            stats.table(actors[who].actor, name, days=int(days))
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        print(f"\n=== {who} {days}d {name}: {len(captured)} statements")
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters in captured:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plan = [r[0] for r in cursor.fetchall()]
                print("--- " + " ".join(statement.split())[:300])
                print("\n".join(plan))
            raw.rollback()
        finally:
            raw.close()


def page_load(services: Any, tokens: dict[str, str]) -> None:
    import socket

    import uvicorn
    from playwright.sync_api import sync_playwright

    from cloudfilm.interfaces.api.http import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    print(f"\n/dashboard interactive (navigation start to every chart drawn), loopback, "
          f"load {load_avg()}")
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu"])
            for who, token in tokens.items():
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.add_cookies([{"name": "cloudfilm_session", "value": token,
                                      "url": base}])
                page = context.new_page()
                for days in (30, 90, 365):
                    times, served = [], []
                    for _ in range(4):
                        response = page.goto(f"{base}/dashboard?days={days}")
                        if response is None or response.status != 200:
                            raise RuntimeError(f"/dashboard answered "
                                               f"{response and response.status}")
                        page.wait_for_function("() => document.body.dataset.ready === '1'",
                                               timeout=60_000)
                        times.append(page.evaluate("performance.now()"))
                        served.append(page.evaluate(
                            "performance.getEntriesByType('navigation')[0].responseEnd"))
                    times, served = times[1:], served[1:]  # the first warms the cache
                    rows.append({"scope": who, "days": days,
                                 "p50": round(statistics.median(times)),
                                 "max": round(max(times)),
                                 "html_p50": round(statistics.median(served))})
                    print(f"  {who:<8} {days:>3}d p50 {statistics.median(times):6.0f} ms, "
                          f"max {max(times):6.0f} ms (HTML received "
                          f"{statistics.median(served):5.0f} ms)", flush=True)
                context.close()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    _save("page", {"rows": rows, "load": load_avg()})


if __name__ == "__main__":
    main()
