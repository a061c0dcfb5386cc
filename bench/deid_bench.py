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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--reports", action="store_true",
                        help="Also run the residual-risk check on the demo reports")
    args = parser.parse_args()
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
