"""The demo province: deterministic, valid identifiers, hospitals' own conventions, and
reports the platform reads as they were written."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from cloudfilm.demo.objects import exam_datasets, to_part10
from cloudfilm.demo.province import NATIONAL_ID_ISSUER, Exam, Province, build_province
from cloudfilm.demo.reports import display_name, fhir_reports, sr_datasets
from cloudfilm.infrastructure.reports.dicom import read_dicom_report
from cloudfilm.infrastructure.reports.fhir import read_diagnostic_report
from cloudfilm.services.identity import national_id

ANCHOR = datetime(2024, 5, 1, 10)


def test_same_seed_same_province_and_uids() -> None:
    a = build_province("small", seed=3, anchor=ANCHOR)
    b = build_province("small", seed=3, anchor=ANCHOR)
    assert [e.study_uid for e in a.exams] == [e.study_uid for e in b.exams]
    assert build_province("small", seed=4, anchor=ANCHOR).exams[0].study_uid != \
        a.exams[0].study_uid


def test_residents_have_valid_ids_and_two_script_names() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    assert len(province.hospitals) == 12
    assert len(province.residents) >= 200
    assert len({r.national_id for r in province.residents}) == len(province.residents)
    for resident in province.residents:
        assert national_id.is_valid(resident.national_id)
        assert re.fullmatch(r"[A-Za-z]+\^[A-Za-z]+=\w\^\w{1,2}", resident.dicom_name)
    modalities = {e.modality for e in province.exams}
    assert modalities == {"CT", "MR", "DX", "US"}
    late = [e for e in province.exams if 12 < (ANCHOR - e.performed).total_seconds() / 3600 < 72]
    assert late, "some recent exams must reach the archive more than 12 hours late"


def test_objects_carry_charset_local_id_and_national_id() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    exam = next(e for e in province.exams if e.modality == "DX" and
                e.hospital.charset == "GB18030")
    ds = next(exam_datasets(exam, 3))
    again = dcmread(DicomBytesIO(to_part10(ds)))
    assert again.SpecificCharacterSet == "GB18030"
    assert str(again.PatientName) == exam.resident.dicom_name
    assert again.PatientID.startswith(exam.hospital.patient_id_prefix)
    other = again.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID) == (exam.resident.national_id,
                                                          NATIONAL_ID_ISSUER)
    assert to_part10(next(exam_datasets(exam, 3))) == to_part10(ds)  # deterministic bytes


# --- diagnostic reports -------------------------------------------------------------------


def test_reports_are_deterministic_and_independent_of_the_exam_plan() -> None:
    a = build_province("small", seed=3, anchor=ANCHOR)
    b = build_province("small", seed=3, anchor=ANCHOR)
    assert [e.report for e in a.exams] == [e.report for e in b.exams]
    other = build_province("small", seed=4, anchor=ANCHOR)
    assert [e.report_text for e in other.exams] != [e.report_text for e in a.exams]


def test_every_exam_has_a_report_with_plausible_shares_and_times() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    plans = [e.report for e in province.exams]
    assert all(p is not None for p in plans)
    for exam in province.exams:
        plan = exam.report
        assert plan is not None
        assert plan.findings and plan.impression and plan.author != plan.verifier
        assert re.fullmatch(r"[A-Za-z]+\^[A-Za-z]+=\w\^\w{1,2}", plan.verifier)
        # SR from the PACS of a C-STORE hospital, FHIR from the RIS of a STOW-RS one.
        assert plan.kind == ("sr" if exam.hospital.door == "dimse" else "fhir")
        assert not (plan.before_images and plan.kind == "sr")
        delay = (plan.issued - exam.performed).total_seconds() / 3600
        assert 0.5 - 1 / 3600 <= delay <= 30 and plan.issued <= ANCHOR
        assert exam.report_text == plan.versions[-1].text
        if plan.amended is not None:
            assert plan.issued < plan.amended.issued <= ANCHOR
            assert plan.amended.impression != plan.impression
            assert plan.amended.findings == plan.findings and plan.amended.amended is None
    fhir = [p for p in plans if p is not None and p.kind == "fhir"]
    assert 0.4 <= len(fhir) / len(plans) <= 0.7
    assert 0.03 <= sum(p.before_images for p in fhir) / len(fhir) <= 0.25
    assert 0.04 <= sum(p is not None and p.amended is not None for p in plans) / len(plans) <= 0.2
    late = [e for e in province.exams
            if e.report is not None and e.report.issued - e.performed > timedelta(hours=12)]
    assert 0.03 <= len(late) / len(plans) <= 0.4, "some reports are verified late on purpose"
    normal = sum("未见明显异常" in (p.impression if p else "") for p in plans) / len(plans)
    assert 0.3 <= normal <= 0.75, "a mix of normal and abnormal reports"


def test_report_text_fits_modality_and_compares_with_an_earlier_exam() -> None:
    province = build_province("large", seed=3, anchor=ANCHOR)
    texts: dict[str, str] = {}
    for exam in province.exams:
        assert exam.report is not None
        texts[exam.modality] = texts.get(exam.modality, "") + exam.report.impression
    assert all(word in texts["CT"] for word in ("结节", "磨玻璃", "未见明显异常"))
    assert all(word in texts["MR"] for word in ("腔隙性脑梗死", "未见明显异常"))
    assert all(word in texts["DX"] for word in ("心肺膈未见明显异常", "肺气肿"))
    assert all(word in texts["US"] for word in ("肝囊肿", "胆囊结石", "脂肪肝"))
    # A resident seen earlier at another hospital: the later report compares with it.
    compared = 0
    by_resident: dict[int, list[Exam]] = {}
    for exam in province.exams:
        by_resident.setdefault(exam.resident.index, []).append(exam)
    for exams in by_resident.values():
        if len(exams) == 2 and exams[0].modality == exams[1].modality:
            later, earlier = sorted(exams, key=lambda e: e.performed, reverse=True)
            assert later.report is not None and earlier.report is not None
            assert f"{earlier.performed:%Y-%m-%d}" in later.report.findings
            assert earlier.hospital.name in later.report.findings
            compared += 1
    assert compared >= 10


def _sr_exam(province: Province, *, amended: bool) -> Exam:
    return next(e for e in province.exams if e.report is not None and e.report.kind == "sr"
                and (e.report.amended is not None) == amended)


def test_sr_reports_are_read_by_the_platform_as_sent() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    for exam in (_sr_exam(province, amended=False), _sr_exam(province, amended=True)):
        assert exam.report is not None
        image = dcmread(DicomBytesIO(to_part10(next(exam_datasets(exam, 3)))))
        datasets = sr_datasets(exam)
        assert len(datasets) == len(exam.report.versions)
        assert fhir_reports(exam) == []
        first_key = ""
        for ds, plan in zip(datasets, exam.report.versions, strict=True):
            again = dcmread(DicomBytesIO(to_part10(ds)))
            assert again.SpecificCharacterSet == "ISO_IR 192" and again.Modality == "SR"
            assert again.SeriesInstanceUID not in {s.uid for s in exam.series}
            for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber",
                            "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
                assert again[keyword].value == image[keyword].value, keyword
            doc = read_dicom_report(again)
            assert (doc.findings, doc.impression) == (plan.findings, plan.impression)
            assert doc.study_instance_uid == exam.study_uid and doc.modality == exam.modality
            assert doc.author == display_name(plan.author) != ""
            assert doc.verifier == display_name(plan.verifier) != ""
            assert doc.issued_at is not None
            assert doc.issued_at.replace(tzinfo=None) == plan.issued
            assert not doc.warnings
            if plan is exam.report:
                assert doc.status == "final"
                first_key = doc.report_key
            else:
                assert doc.status == "amended" and doc.predecessor_keys == (first_key,)
        assert [to_part10(d) for d in sr_datasets(exam)] == [to_part10(d) for d in datasets]


def test_fhir_reports_are_read_by_the_platform_as_sent() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    exam = next(e for e in province.exams if e.report is not None and e.report.kind == "fhir"
                and e.report.amended is not None)
    assert exam.report is not None and sr_datasets(exam) == []
    docs = [read_diagnostic_report(json.dumps(r, ensure_ascii=False).encode())
            for r in fhir_reports(exam)]
    assert [d.status for d in docs] == ["final", "amended"]
    assert docs[0].report_key == docs[1].report_key  # one report, two versions
    for doc, plan in zip(docs, exam.report.versions, strict=True):
        assert (doc.findings, doc.impression) == (plan.findings, plan.impression)
        assert (doc.study_instance_uid, doc.accession_number) == (exam.study_uid,
                                                                  exam.accession)
        assert doc.issued_at is not None and doc.issued_at.replace(tzinfo=None) == plan.issued
        assert doc.author == display_name(plan.author) and not doc.warnings


def test_recognition_priors_ten_days_before_elsewhere() -> None:
    from datetime import timedelta

    from cloudfilm.demo.province import recognition_examples

    province = build_province("small", seed=3, anchor=ANCHOR)
    pairs = recognition_examples(province)
    assert len(pairs) == 2
    for recent, prior in pairs:
        assert recent.resident is prior.resident and recent.hospital is not prior.hospital
        assert prior.description == "胸部CT平扫" and prior.body_part == "CHEST"
        assert timedelta(days=9) < recent.performed - prior.performed < timedelta(days=11)
        assert prior.hospital.level.startswith("三级") and prior.report is not None
