"""What the access policy and the audit trail cost per request: QIDO-RS and WADO-RS latency
with and without them, in the same server run.

One server process (``--serve``, started by this script) holds one archive and mounts the
same DICOMweb application twice:

- ``/off``: services built with an allow-all policy and an audit trail that writes nothing
  (this benchmark's stand-ins; the platform has no switch to turn either off);
- ``/on``: the real services: policy decision (or SQL filter) and one committed audit row
  per request.

Callers on ``/on``: the local operator (no header), a hospital credential (``cfh_``) reading
its own studies, and a doctor of hospital A with a grant reading hospital B's study (the
doctor's actor is injected by a bench-only middleware, standing in for a ``cfs_`` session).
Requests are sequential on one keep-alive connection, scenarios interleaved in rounds so
that drift hits them equally.

    .venv/bin/python bench/policy_bench.py --quick            # ~1 min
    .venv/bin/python bench/policy_bench.py --index postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cloudfilm.services.access.actor import LOCAL_OPERATOR as OPERATOR

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import WORK_DIR, free_port, recreate_pg_database  # noqa: E402

OUT_DIR = BENCH_DIR / "out"
ADMIN_TOKEN = "bench-admin-token"


# -- server side ----------------------------------------------------------------------------


def serve(port: int, data_dir: Path, db_url: str | None, ready: Path) -> None:
    import uvicorn
    from pydantic import SecretStr
    from sqlalchemy.orm import Session
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from cloudfilm.app import build_services, configure_dicom_libraries, freeze_startup_objects
    from cloudfilm.config import SecuritySettings, Settings
    from cloudfilm.infrastructure.db.models import AccessGrant, Account
    from cloudfilm.interfaces.api.http import create_app
    from cloudfilm.services.access.actor import Actor
    from cloudfilm.services.access.audit import AuditService
    from cloudfilm.services.access.policy import AccessPolicy, Decision
    from cloudfilm.services.archive.ingest import IngestItem, Sender
    from cloudfilm.services.archive.query import QueryService
    from cloudfilm.services.archive.retrieve import RetrieveService
    from cloudfilm.services.identity.hospitals import HospitalInput
    from synth import make_ct_series, make_small_studies, to_bytes

    configure_dicom_libraries()
    security = SecuritySettings(
        national_id_key=SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
        national_id_hmac_key=SecretStr("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
        admin_token=SecretStr(ADMIN_TOKEN), local_mode="open", allow_open_local_mode=True)
    settings = Settings(data_dir=data_dir, database_url=db_url, security=security)
    services = build_services(settings)
    db = services.health._db
    spool = data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)

    def ingest(code: str, blobs: list[bytes]) -> None:
        items = []
        for i, data in enumerate(blobs):
            path = spool / f"{code}-{time.monotonic_ns()}-{i}.dcm"
            path.write_bytes(data)
            items.append(IngestItem(path, move=True))
        for result in services.ingest.ingest_files(items, sender=Sender(code, code, "bench")):
            assert not isinstance(result, Exception), result

    for code in ("HA", "HB"):
        services.hospitals.register(HospitalInput(code=code, name=f"Hospital {code}",
                                                  level="tertiary", grade="A"))
    # Filler: 2,000 one-instance studies per hospital, so filters meet a real index.
    for code, seed in (("HA", 1), ("HB", 2)):
        batch = [data for _, data in make_small_studies(2000, n_patients=400, seed=seed)]
        for i in range(0, len(batch), 200):
            ingest(code, batch[i:i + 200])
    # The studies read: one per hospital, 50 slices of 64x64, patient BENCH-1 at HB.
    targets = {}
    for code, pid in (("HA", "BENCH-A"), ("HB", "BENCH-1")):
        slices = list(make_ct_series(50, patient_id=pid, patient_name="Bench^Patient",
                                     size=64, seed=7 if code == "HA" else 8))
        ingest(code, [to_bytes(ds) for ds in slices])
        targets[code] = (str(slices[0].StudyInstanceUID), str(slices[0].SeriesInstanceUID),
                         str(slices[0].SOPInstanceUID), pid)
    hospital_ids = {h.code: h.id for h in services.hospitals.list()}
    _link_fillers(db.engine, hospital_ids["HB"])
    # Link HB's target patient to a resident so that a grant can name them.
    resident_id = _link(services.residents, "HB", targets["HB"][3])
    now = datetime.now(UTC)
    with Session(db.engine) as session, session.begin():
        doctor = Account(kind="doctor", username="bench-doctor", display_name="Dr Bench",
                         hospital_id=hospital_ids["HA"], department="radiology",
                         created_at=now)
        session.add(doctor)
        session.flush()
        session.add(AccessGrant(doctor_account_id=doctor.id, hospital_id=hospital_ids["HA"],
                                resident_id=resident_id, scope_all=True, study_uids="[]",
                                purpose="bench", mode="sms", status="active", hours=24,
                                requested_at=now, decided_at=now,
                                expires_at=now + timedelta(hours=24)))
        doctor_id = int(doctor.id)
    doctor_actor = Actor(kind="doctor", subject=f"account:{doctor_id}",
                         hospital_id=hospital_ids["HA"], hospital_code="HA",
                         account_id=doctor_id, department="radiology", display="Dr Bench")
    token = services.credentials.issue("HB").token

    class AllowAll(AccessPolicy):
        def decide(self, conn: Any, actor: Any, permission: Any, resource: Any) -> Decision:
            return Decision(True, "bench", exists=True)

        def filter(self, conn: Any, actor: Any) -> None:
            return None

    class NoAudit(AuditService):
        def write(self, entries: Any, *, conn: Any = None) -> None:
            return None

        def study_owners(self, conn: Any, study_uids: Any) -> dict[str, int | None]:
            return {}

    blobs = services.retrieve._blobs
    bare_audit = NoAudit(db, address_key=b"x" * 32)
    off = replace(services, query=QueryService(db, AllowAll(), bare_audit),
                  retrieve=RetrieveService(db, blobs, AllowAll(audit=bare_audit), bare_audit))
    app_on, app_off = create_app(services), create_app(off)

    class InjectDoctor:
        """Bench-only: ``X-Bench-Actor: doctor`` stands in for a doctor's session."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and (b"x-bench-actor", b"doctor") in scope["headers"]:
                scope["cloudfilm.actor"] = doctor_actor
            await self.app(scope, receive, send)

    outer = Starlette(routes=[Mount("/on", app=InjectDoctor(app_on)), Mount("/off", app=app_off)])
    ready.write_text(json.dumps({"targets": targets, "token": token}))
    freeze_startup_objects()
    uvicorn.run(outer, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _link_fillers(engine: Any, hospital_id: int) -> None:
    """Give every filler patient of a hospital a resident, so that a page of its studies
    carries ~100 residents' data (one audit record each, issue 11 finding 5)."""
    from sqlalchemy import insert, select
    from sqlalchemy.orm import Session

    from cloudfilm.infrastructure.db.models import Patient, PatientLink, Resident

    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        patients = session.execute(select(Patient.id).where(
            Patient.hospital_id == hospital_id,
            Patient.patient_id.not_like("BENCH-%"))).scalars().all()
        for fk in patients:
            resident = Resident(created_at=now, updated_at=now)
            session.add(resident)
            session.flush()
            session.execute(insert(PatientLink).values(
                patient_fk=fk, resident_id=resident.id, state="linked", updated_at=now))


def _link(residents: Any, code: str, patient_id: str) -> int:
    import random

    from cloudfilm.services.identity import national_id
    from cloudfilm.services.identity.mpi import Registration

    nid = national_id.generate(area_code="330106", birth_date=datetime(1960, 1, 1).date(),
                               sex="M", rng=random.Random(3))

    outcome = residents.register_patient(code, Registration(patient_id=patient_id,
                                                            national_id=nid, sex="M",
                                                            birth_date="19600101"),
                                         actor=OPERATOR)
    assert outcome.resident_id is not None, outcome
    return int(outcome.resident_id)


# -- client side ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workdir = WORK_DIR / f"policy-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = None
    if args.index == "postgresql":
        recreate_pg_database("bench_policy")
        db_url = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_policy"
    port = free_port()
    ready = workdir / "ready.json"
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(workdir / "data"), db_url or "",
         str(ready)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server failed; see {workdir / 'server.log'}")
            time.sleep(0.2)
        info = json.loads(ready.read_text())
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/off/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        results = measure(base, info, rounds=args.rounds, batch=args.batch)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    table = render(results, args)
    print(table)
    OUT_DIR.mkdir(exist_ok=True)
    name = f"policy-{stamp}{'-quick' if args.quick else ''}"
    (OUT_DIR / f"{name}.md").write_text(table)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(results, indent=1))


def measure(base: str, info: dict[str, Any], *, rounds: int,
            batch: int) -> dict[str, dict[str, list[float]]]:
    b_study, b_series, b_sop, b_pid = info["targets"]["HB"]
    hospital = {"Authorization": f"Bearer {info['token']}"}
    doctor = {"X-Bench-Actor": "doctor"}
    scenarios: dict[str, tuple[str, dict[str, str]]] = {
        "off (no policy, no audit)": ("/off", {}),
        "operator": ("/on", {}),
        "hospital HB (own study)": ("/on", hospital),
        "doctor HA + grant (HB study)": ("/on", doctor),
    }
    endpoints = {
        "QIDO studies ?PatientID": (f"/dicomweb/studies?PatientID={b_pid}",
                                    "application/dicom+json"),
        "QIDO studies ?limit=100 (~100 residents)": ("/dicomweb/studies?limit=100",
                                                     "application/dicom+json"),
        "QIDO study instances": (f"/dicomweb/studies/{b_study}/instances",
                                 "application/dicom+json"),
        "WADO series metadata": (f"/dicomweb/studies/{b_study}/series/{b_series}/metadata",
                                 "application/dicom+json"),
        "WADO instance": (f"/dicomweb/studies/{b_study}/series/{b_series}/instances/{b_sop}",
                          'multipart/related; type="application/dicom"; transfer-syntax=*'),
    }
    results: dict[str, dict[str, list[float]]] = {e: {s: [] for s in scenarios}
                                                 for e in endpoints}
    with httpx.Client(timeout=30, headers={"Accept-Encoding": "identity"}) as client:
        for endpoint, (path, accept) in endpoints.items():
            for scenario, (prefix, headers) in scenarios.items():  # warm-up and check
                for _ in range(5):
                    r = client.get(base + prefix + path, headers={**headers, "Accept": accept})
                    assert r.status_code == 200, (endpoint, scenario, r.status_code, r.text)
            for _ in range(rounds):
                for scenario, (prefix, headers) in scenarios.items():
                    url, hdrs = base + prefix + path, {**headers, "Accept": accept}
                    for _ in range(batch):
                        t0 = time.perf_counter()
                        r = client.get(url, headers=hdrs)
                        _ = r.content
                        results[endpoint][scenario].append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200
    return results


def render(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    lines = [f"# Access policy + audit cost ({args.index}, "
             f"{'quick' if args.quick else 'full'}; {os.cpu_count()} CPUs)", "",
             "| request | caller | n | p50 ms | p95 ms | +p50 vs off | +p95 vs off |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for endpoint, per in results.items():
        off = per["off (no policy, no audit)"]
        base50, base95 = statistics.median(off), pct(off, 0.95)
        for scenario, values in per.items():
            p50, p95 = statistics.median(values), pct(values, 0.95)
            extra = ("" if values is off else f"{p50 - base50:+.2f} | {p95 - base95:+.2f}")
            lines.append(f"| {endpoint} | {scenario} | {len(values)} | {p50:.2f} | {p95:.2f} | "
                         f"{extra or '- | -'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _, _, port, data, db_url, ready = sys.argv
        serve(int(port), Path(data), db_url or None, Path(ready))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (~1 minute)")
    parser.add_argument("--index", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    args.rounds, args.batch = (10, 20) if args.quick else (25, 40)
    run(args)


if __name__ == "__main__":
    main()
