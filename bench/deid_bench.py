"""De-identification throughput: objects/s on one core (one process, one thread).

Synthetic 512x512 CT slices from ``bench/synth.py`` are parsed from bytes, de-identified with
the Annex E profile (modified dates, patient characteristics, clean descriptors) and written
back to bytes, as an export does. Run ``python bench/deid_bench.py --objects 200``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloudfilm.infrastructure.deid import DeidOptions, Pseudonymiser, deidentify
from synth import make_ct_series, to_bytes


def reports() -> dict[str, object]:
    """Residual-risk check on the demo province's reports, printed as a hospital would
    (patient, ID number, hospital, date, findings, impression, signatures)."""
    from datetime import UTC, datetime

    from cloudfilm.demo.province import build_province
    from cloudfilm.infrastructure.deid import deidentify_text, residual_risk

    province = build_province("small", seed=7, anchor=datetime(2026, 12, 1, tzinfo=UTC))
    hospitals = {h.name: "HOSPITAL" for h in province.hospitals}
    n = leaks_rules = leaks_dict = risky_rules = risky_dict = 0
    for exam in province.exams:
        plan = exam.report
        if plan is None:
            continue
        person = exam.resident
        name = person.family[0] + person.given[0]
        author = plan.author.split("=")[-1].replace("^", "")
        verifier = plan.verifier.split("=")[-1].replace("^", "")
        text = (f"患者：{name}  身份证号：{person.national_id}  {exam.hospital.name}\n"
                f"检查日期：{exam.performed:%Y年%m月%d日}\n检查所见：{plan.findings}\n"
                f"诊断意见：{plan.impression}\n报告医师：{author}  审核医师：{verifier}")
        secrets = [name, person.national_id, exam.hospital.name, author, verifier,
                   f"{exam.performed:%Y年%m月%d日}"]
        dictionary = {**hospitals, name: "NAME", author: "NAME", verifier: "NAME"}
        n += 1
        rules_only = deidentify_text(text).text
        with_dict = deidentify_text(text, dictionary).text
        leaks_rules += any(s in rules_only for s in secrets)
        leaks_dict += any(s in with_dict for s in secrets)
        risky_rules += bool(residual_risk(rules_only))
        risky_dict += bool(residual_risk(with_dict, dictionary))
    return {"reports": n, "leaking_rules_only": leaks_rules,
            "flagged_by_residual_check_rules_only": risky_rules,
            "leaking_rules_and_dictionary": leaks_dict,
            "flagged_by_residual_check_with_dictionary": risky_dict}


def export_rate(n: int) -> dict[str, object]:
    """Objects/s of a whole export on the embedded platform (SQLite, local blobs): cohort
    query, blob read, de-identification, per-object audit, streamed zip."""
    import tempfile
    from datetime import date, timedelta

    from cloudfilm.app import build_services
    from cloudfilm.config import Settings
    from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
    from cloudfilm.services.archive.ingest import IngestItem, Sender
    from cloudfilm.services.research.service import ExportSummary, ProjectInput

    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(Settings(data_dir=Path(tmp) / "data", auto_migrate=True))
        items = []
        for i, ds in enumerate(make_ct_series(n, patient_id="P1", patient_name="Smith^Anna",
                                              size=256)):
            path = Path(tmp) / f"{i}.dcm"
            path.write_bytes(to_bytes(ds))
            items.append(IngestItem(path))
        services.ingest.ingest_files(items, sender=Sender("BENCH", "Bench", "bench"))
        project = services.research.propose(LOCAL_OPERATOR, ProjectInput(
            title="bench", principal_investigator="PI", institution="I",
            ethics_reference="E", ethics_expires=date.today() + timedelta(days=1),
            options={"retain_modified_dates": True, "clean_descriptors": True}))
        services.research.approve(LOCAL_OPERATOR, project.id)
        admin = Actor(kind="admin", subject="admin:bench")
        summary = ExportSummary()
        start = time.perf_counter()
        size = sum(len(c) for c in services.research.export(admin, project.id, summary))
        elapsed = time.perf_counter() - start
        services.health._db.dispose()
    return {"export_objects": summary.exported, "seconds": round(elapsed, 2),
            "export_objects_per_s": round(summary.exported / elapsed, 1),
            "zip_MB": round(size / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--reports", action="store_true",
                        help="Also run the residual-risk check on the demo reports")
    parser.add_argument("--export", type=int, default=0, metavar="N",
                        help="Also time an export of N objects on the embedded platform")
    args = parser.parse_args()
    if args.export:
        print(json.dumps(export_rate(args.export)))
    if args.reports:
        print(json.dumps(reports()))
    blobs = [to_bytes(ds) for ds in make_ct_series(args.objects, patient_id="P1",
                                                    patient_name="Smith^Anna")]
    options = DeidOptions(retain_modified_dates=True, retain_patient_characteristics=True,
                          clean_descriptors=True, age_band_years=5)
    pseudo = Pseudonymiser(b"bench-project-key-0123456789abcdef")
    start = time.perf_counter()
    out_bytes = 0
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob))
        result = deidentify(ds, options, pseudo)
        assert result.dataset is not None
        buf = io.BytesIO()
        result.dataset.save_as(buf, enforce_file_format=True)
        out_bytes += buf.tell()
    elapsed = time.perf_counter() - start
    print(json.dumps({"objects": len(blobs), "seconds": round(elapsed, 3),
                      "objects_per_s_per_core": round(len(blobs) / elapsed, 1),
                      "MB_per_s": round(out_bytes / elapsed / 1e6, 1)}))


if __name__ == "__main__":
    main()
