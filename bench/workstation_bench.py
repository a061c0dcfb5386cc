"""What the doctor's workstation pages cost on the server: national-ID look-up, the patient
view (every study of the resident, split by the policy, audited), a study pane beside its
report (htmx), and the duplicate-exam check from the order box.

In-process (Starlette's TestClient over the real app, SQLite index in a temporary folder):
no network, so the figures are the server's work per page (policy decisions, audit rows,
template rendering), not a browser's. One resident with ``--studies`` single-image CT studies,
half at the doctor's hospital and half at another; a grant to all of them for the second
half of the rounds.

    .venv/bin/python bench/workstation_bench.py --studies 100 --rounds 40
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from random import Random

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from synth import make_ct_series, make_uid, to_bytes  # noqa: E402

PASSWORD = "bench-password-1"
HOST = "http://127.0.0.1"


def _timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[max(int(len(times) * 0.95) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.config import Settings
    from cloudfilm.interfaces.api.http import create_app
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.access.actor import LOCAL_OPERATOR
    from cloudfilm.services.access.consent import GrantRequest
    from cloudfilm.services.archive.ingest import IngestItem, Sender
    from cloudfilm.services.identity import national_id
    from cloudfilm.services.identity.hospitals import HospitalInput

    configure_dicom_libraries()
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
        folder = Path(tmp)
        services = build_services(Settings(data_dir=folder / "data"))
        for code in ("HA", "HB"):
            services.hospitals.register(HospitalInput(
                code=code, name=f"Bench hospital {code}", level="tertiary", grade="A",
                national_id_source="patient_id"), actor=LOCAL_OPERATOR)
        nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                                   rng=Random(7))
        template = next(iter(make_ct_series(1, patient_id=nid, patient_name="Wang^XiaoDong",
                                            size=64)))
        for k in range(args.studies):
            code = "HA" if k % 2 == 0 else "HB"
            ds = template
            ds.StudyInstanceUID = make_uid("ws", k)
            ds.SeriesInstanceUID = make_uid("ws", k, "s")
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = make_uid("ws", k, "i")
            ds.StudyDate = (date.today() - timedelta(days=3 * k)).strftime("%Y%m%d")
            ds.AccessionNumber = f"A{k:06d}"
            ds.BodyPartExamined = "CHEST"
            path = folder / f"{k}.dcm"
            path.write_bytes(to_bytes(ds))
            [result] = services.ingest.ingest_files(
                [IngestItem(path)], sender=Sender(code, f"Bench hospital {code}", "bench"))
            assert not isinstance(result, Exception), result
        services.accounts.create_account(NewAccount(
            kind="doctor", username="bench.doctor", password=PASSWORD, display_name="Dr B",
            hospital_code="HA", department="放射科"), by=LOCAL_OPERATOR)
        with TestClient(create_app(services), base_url=HOST, follow_redirects=False,
                        headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}) as client:
            page = client.get("/workstation/signin")
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            signed = client.post("/workstation/signin", data={
                "username": "bench.doctor", "password": PASSWORD, "csrf_token": csrf},
                headers={"origin": HOST})
            assert signed.status_code == 303, signed.text[:300]
            found = client.get("/workstation", params={"q": nid})
            ref = re.search(r"/workstation/patients/([rp]\d+-[0-9a-f]{24})", found.text).group(1)  # type: ignore[union-attr]
            own = make_uid("ws", 0)
            rows = []
            half = max(args.rounds // 2, 1)
            rows.append(("national-ID look-up", *_timed(
                lambda: client.get("/workstation", params={"q": nid}), min(half, 50))))
            rows.append(("patient view, no grant", *_timed(
                lambda: client.get(f"/workstation/patients/{ref}"), half)))
            rows.append(("study pane (htmx)", *_timed(
                lambda: client.get(f"/workstation/patients/{ref}/studies/{own}",
                                   headers={"hx-request": "true"}), half)))
            rows.append(("duplicate-exam check", *_timed(
                lambda: client.post(f"/workstation/patients/{ref}/order", data={
                    "item": "CT-CHEST", "csrf_token": csrf},
                    headers={"origin": HOST, "hx-request": "true"}), half)))
            # A grant to all of the resident's studies, then the view again.
            resident = int(ref[1:].split("-")[0])
            account = services.accounts.sign_in_password("bench.doctor", PASSWORD,
                                                         requester="bench").actor
            grant = services.consent.break_glass(account, GrantRequest(
                purpose="bench: emergency comparison", resident_id=resident))
            assert grant.status == "active"
            rows.append(("patient view, granted", *_timed(
                lambda: client.get(f"/workstation/patients/{ref}"), half)))
        services.health._db.dispose()
    print(f"workstation pages, {args.studies} studies of one resident (half elsewhere), "
          "in-process, SQLite")
    print(f"{'page':<26} {'median ms':>10} {'p95 ms':>8}")
    for name, median, p95 in rows:
        print(f"{name:<26} {median:>10.1f} {p95:>8.1f}")


if __name__ == "__main__":
    main()
