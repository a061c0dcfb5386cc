"""The demo loader against the real doors (HTTP and DIMSE in-process, both databases): the
images and the reports arrive, every exam ends up with exactly one linked report, and a
second load adds nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cloudfilm.cli.demo import _in_process
from cloudfilm.config import Settings
from cloudfilm.demo.loader import (
    Credentials,
    LoadSummary,
    api_base,
    load_province,
    register_hospitals,
)
from cloudfilm.demo.province import Exam, Hospital, Province, build_province
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.container import Services

ANCHOR = datetime(2024, 5, 1, 10)
SEED = 7


def _small_cases() -> Province:
    """A few radiographs and ultrasounds of the small province (cheap pixels) covering every
    report path: FHIR, FHIR sent before its images, SR, and both kinds amended."""
    province = build_province("small", seed=SEED, anchor=ANCHOR)
    cheap = [e for e in province.exams if e.modality in ("DX", "US") and e.report is not None]
    wanted = [
        lambda e: e.report.kind == "fhir" and e.report.before_images,
        lambda e: e.report.kind == "fhir" and e.report.amended is not None,
        lambda e: e.report.kind == "fhir" and not e.report.before_images,
        lambda e: e.report.kind == "sr" and e.report.amended is not None,
        lambda e: e.report.kind == "sr" and e.report.amended is None,
        lambda e: e.report.kind == "sr" and e.report.amended is None,
    ]
    chosen: list[Exam] = []
    for matches in wanted:
        chosen.append(next(e for e in cheap if e not in chosen and matches(e)))
    return Province(province.hospitals, province.residents, tuple(chosen))


def _versions(services: Services, exam: Exam) -> list[int]:
    """The version counts of the reports linked to the exam's study."""
    reports = services.reports.study_reports(exam.study_uid, actor=LOCAL_OPERATOR)
    return [len(services.reports.get(r.report_id, actor=LOCAL_OPERATOR).versions)
            for r in reports]


def test_api_base_sits_next_to_dicomweb() -> None:
    assert api_base("http://127.0.0.1:8042/dicomweb") == "http://127.0.0.1:8042/api/v1"
    assert api_base("https://pacs.example/x/dicomweb/") == "https://pacs.example/x/api/v1"


def _credentials(services: Services) -> Credentials:
    """A hospital credential per asking, as ``cloudfilm demo`` issues them."""

    def credential(hospital: Hospital) -> str:
        return str(services.credentials.issue(hospital.code, label="test",
                                              actor=LOCAL_OPERATOR).token)
    return credential


def test_demo_load_sends_reports_once(services: Services, settings: Settings) -> None:
    province = _small_cases()
    register_hospitals(services.hospitals, province)
    credential = _credentials(services)
    with _in_process(services, settings) as target:
        first = load_province(province, target, seed=SEED, credentials=credential)
        after_first = {e.study_uid: _versions(services, e) for e in province.exams}
        second = load_province(province, target, seed=SEED, credentials=credential)

    planned = sum(len(e.report.versions) for e in province.exams if e.report is not None)
    assert first.failures == []
    assert (first.studies_sent, first.reports_sent, first.reports_failed) == (
        len(province.exams), planned, 0)
    for exam in province.exams:
        assert exam.report is not None
        reports = services.reports.study_reports(exam.study_uid, actor=LOCAL_OPERATOR)
        assert len(reports) == 1, exam.report.kind
        report = reports[0]
        latest = exam.report.versions[-1]
        assert report.link_state == "linked"  # the early FHIR report too, once images came
        assert (report.findings, report.impression) == (latest.findings, latest.impression)
        assert report.source == ("fhir" if exam.report.kind == "fhir" else "dicom-sr")
        assert report.hospital_code == exam.hospital.code
        assert report.versions == len(exam.report.versions)
        assert report.status == ("amended" if exam.report.amended is not None else "final")

    assert second == LoadSummary(studies_planned=len(province.exams),
                                 studies_skipped=len(province.exams),
                                 reports_planned=planned, reports_skipped=planned)
    assert {e.study_uid: _versions(services, e) for e in province.exams} == after_first


def test_demo_load_adds_reports_to_studies_held_without_them(services: Services,
                                                             settings: Settings) -> None:
    """An archive loaded before the demo had reports: only the reports are sent (the SR
    objects of a C-STORE hospital must not make its images look held, nor the reverse)."""
    province = _small_cases()
    bare = Province(province.hospitals, province.residents,
                    tuple(replace(e, report=None) for e in province.exams))
    register_hospitals(services.hospitals, province)
    credential = _credentials(services)
    with _in_process(services, settings) as target:
        before = load_province(bare, target, seed=SEED, credentials=credential)
        summary = load_province(province, target, seed=SEED, credentials=credential)
    planned = sum(len(e.report.versions) for e in province.exams if e.report is not None)
    assert before.failures == summary.failures == [] and before.reports_planned == 0
    assert (summary.studies_skipped, summary.instances_sent) == (len(province.exams), 0)
    assert (summary.reports_sent, summary.reports_failed) == (planned, 0)
    for exam in province.exams:
        assert exam.report is not None
        assert _versions(services, exam) == [len(exam.report.versions)]
