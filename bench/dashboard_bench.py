"""The commission's dashboard at province scale (issue 17), on PostgreSQL.

Index rows only, no pixels, generated server-side (``INSERT ... SELECT generate_series``)
into a fresh database: 2,000 hospitals in 11 cities, ``--studies`` studies (one series
each; a report for 80 %) with exam times over ``--days`` days, 85 % uploaded within 12
hours. Then:

1. the full rollup of every day (first start of the dashboard on an existing archive);
2. every dashboard figure (each table of ``/api/v1/stats``) for the province, a city
   bureau and a hospital administrator, 30 and 365 days: p50/p95 over ``--reps`` calls
   (service calls: scope, audit record, rollup reads and today's live rows);
3. the nightly rollup: one more day of ``--day-studies`` studies (+ series and reports)
   and ``--day-audit`` audit records of image reads, rolled incrementally; the time is
   extrapolated linearly to 30 M records (the day's rows are read by indexed ranges);
4. ``/dashboard`` in headless Chromium on loopback: navigation start to all charts drawn.

Run: ``.venv/bin/python bench/dashboard_bench.py [--studies 10000000]``; the database
``cloudfilm_dash_bench`` on ``CLOUDFILM_TEST_PG_URL``'s server is dropped at the end.
"""

from __future__ import annotations

import argparse
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
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudfilm.config import HttpSettings, SecuritySettings, Settings  # noqa: E402

PG = os.environ.get("CLOUDFILM_TEST_PG_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB = "cloudfilm_dash_bench"
CITIES = ("杭州", "宁波", "温州", "嘉兴", "湖州", "绍兴", "金华", "衢州", "舟山", "台州", "丽水")
MODALITIES = ("CT", "MR", "DX", "US", "MG", "CR")


def _sql(conn: Any, statement: str, **params: Any) -> float:
    started = time.perf_counter()
    conn.execute(text(statement), params)
    return time.perf_counter() - started


def generate(url: str, studies: int, days: int, now: datetime) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
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
        # Hospitals 1999 and 2000 never upload (silent).
        took = _sql(conn, f"""INSERT INTO study (id, study_instance_uid, patient_fk,
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
                  FROM generate_series(1, {studies}) g) s""", now=now)
        print(f"  studies: {studies:,} in {took:.0f} s", flush=True)
        took = _sql(conn, """INSERT INTO series (id, series_instance_uid, study_fk, modality,
            series_number, series_description, body_part_examined,
            performed_procedure_step_start_date, performed_procedure_step_start_time,
            num_instances, received_at, updated_at, attributes_json)
            SELECT id, study_instance_uid || '.1', id, (CAST(:mods AS text[]))[1 + id % 6],
              1, '', '', '', '',
              num_instances, received_at, received_at, '{}' FROM study""",
                    mods=list(MODALITIES))
        print(f"  series: {took:.0f} s", flush=True)
        took = _sql(conn, """INSERT INTO report (public_id, hospital_id, report_key, study_fk,
            patient_fk, study_instance_uid, accession_number, patient_id, link_state, status,
            current_version, version_count, source, title, modality, findings, impression,
            author, verifier, exam_at, issued_at, received_at, updated_at, linked_at,
            listed_at, search_text)
            SELECT 'r' || id, hospital_id, 'k' || id, id, patient_fk, study_instance_uid,
              accession_number, '', 'linked', 'final', 1, 1, 'fhir', '', '', '', '', '', '',
              exam_at, exam_at + interval '5 hours', received_at + interval '4 hours',
              received_at + interval '4 hours', received_at, exam_at, ''
            FROM study WHERE id % 5 <> 0""")
        print(f"  reports: {took:.0f} s", flush=True)
        for table in ("study", "series", "report", "patient", "hospital"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def add_day(url: str, day_studies: int, day_audit: int, now: datetime) -> int:
    """One more (yesterday's) day of studies, series, reports and audit reads."""
    engine = create_engine(url)
    with engine.begin() as conn:
        first = conn.execute(text("SELECT max(id) FROM study")).scalar() + 1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--day-studies", type=int, default=100_000)
    parser.add_argument("--day-audit", type=int, default=500_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="Keep the database.")
    args = parser.parse_args()

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DB}"'))
    url = PG.rsplit("/", 1)[0] + f"/{DB}"
    try:
        run(url, args)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    from cloudfilm.app import build_services
    from cloudfilm.infrastructure.db import migrate
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    migrate.upgrade(url)
    now = datetime.now(UTC)
    print(f"generating {args.studies:,} studies over {args.days} days ...", flush=True)
    started = time.perf_counter()
    generate(url, args.studies, args.days, now)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    data = Path(tempfile.mkdtemp(prefix="dash-bench-"))
    settings = Settings(
        data_dir=data, database_url=url, auto_migrate=False,
        security=SecuritySettings(
            national_id_key=SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
            national_id_hmac_key=SecretStr("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
            admin_token=SecretStr("bench-admin-token"), local_mode="closed"),
        http=HttpSettings(allowed_hosts=["127.0.0.1", "localhost"]))
    services = build_services(settings)
    stats = services.stats
    assert stats is not None
    result = stats.rollup.run(full=True)
    print(f"full rollup: {len(result.days)} days in {result.seconds:.1f} s", flush=True)

    password = "bench-password-1"
    for username, kind, code, area in (("bench-admin", "admin", None, ""),
                                       ("bench-bureau", "bureau", None, "杭州"),
                                       ("bench-hadmin", "hospital_admin", "H00001", "")):
        services.accounts.create_account(NewAccount(
            kind=kind, username=username, password=password, display_name=username,
            hospital_code=code, area=area), by=LOCAL_OPERATOR)
    actors = {who: services.accounts.sign_in_password(f"bench-{who}", password,
                                                      requester="bench")
              for who in ("admin", "bureau", "hadmin")}
    print("\nfigure p50 / p95 ms (service call incl. scope + audit record)")
    worst = 0.0
    for who, signed in actors.items():
        for days in (30, 365):
            for name in stats.TABLES:
                times = []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    stats.table(signed.actor, name, days=days)
                    times.append((time.perf_counter() - t0) * 1000)
                worst = max(worst, p95(times))
                print(f"  {who:<7} {days:>3}d {name:<17} {statistics.median(times):7.1f} "
                      f"{p95(times):7.1f}", flush=True)
    print(f"worst figure p95: {worst:.1f} ms")

    print(f"\nnightly: one day of {args.day_studies:,} studies + series + reports and "
          f"{args.day_audit:,} audit reads ...", flush=True)
    records = add_day(url, args.day_studies, args.day_audit, now)
    result = stats.rollup.run()
    per_million = result.seconds / records * 1e6
    print(f"  incremental rollup of {len(result.days)} day(s), {records:,} records: "
          f"{result.seconds:.1f} s -> {per_million:.2f} s per million records; "
          f"30 M records ~ {per_million * 30 / 60:.1f} min (linear extrapolation)",
          flush=True)
    page_load(services, settings, actors["admin"].token)
    services.health._db.dispose()


def page_load(services: Any, settings: Any, token: str) -> None:
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
    times = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            context.add_cookies([{"name": "cloudfilm_session", "value": token, "url": base}])
            page = context.new_page()
            for i in range(6):
                response = page.goto(f"{base}/dashboard?days={(30, 365)[i % 2]}")
                if response is None or response.status != 200:
                    raise RuntimeError(f"/dashboard answered {response and response.status}: "
                                       f"{page.content()[:500]}")
                page.wait_for_function("() => document.body.dataset.charts === '5'")
                times.append(page.evaluate("performance.now()"))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"\n/dashboard interactive (navigation start to 5 charts drawn), loopback: "
          f"p50 {statistics.median(times):.0f} ms, max {max(times):.0f} ms over "
          f"{len(times)} loads (30 and 365 days)")


if __name__ == "__main__":
    main()
