"""FHIR R4 DiagnosticReport -> ReportDocument, as Chinese RIS systems send it."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cloudfilm.infrastructure.reports import fhir
from cloudfilm.infrastructure.reports.document import ReportFormatError
from cloudfilm.infrastructure.reports.fhir import html_to_text, read_diagnostic_report

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
CST = timezone(timedelta(hours=8))
STUDY_UID = "1.2.840.113619.2.55.3.604688119.969.1709600000.123"
FINDINGS = "双肺纹理清晰，右肺上叶见一直径约8mm结节"
IMPRESSION = "右肺上叶结节，建议随访"


def acsn(value: str, system: str = "urn:oid:1.2.156.112604.1.2.1") -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
        "system": system,
        "value": value,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def minimal(**changes: Any) -> dict[str, Any]:
    """The smallest report this reader accepts; ``None`` values remove an element."""
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.9", "value": "RPT-1"}],
        "status": "final",
        "code": {"text": "CT 胸部平扫"},
        "imagingStudy": [
            {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}}
        ],
    }
    report.update(changes)
    return {k: v for k, v in report.items() if v is not None}


def error_of(body: Any) -> ReportFormatError:
    with pytest.raises(ReportFormatError) as caught:
        read_diagnostic_report(body)
    return caught.value


# A Chinese RIS report: everything in contained resources, naive local times.
CHINESE = {
    "resourceType": "DiagnosticReport",
    "id": "rpt-20240305-0001",
    "language": "zh-CN",
    "identifier": [
        acsn("CT20240305001"),
        {"system": "urn:oid:1.2.156.112604.1.2.9", "value": "R20240305001"},
    ],
    "status": "final",
    "category": [{"coding": [{"system": DCM, "code": "CT", "display": "Computed Tomography"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "CT 胸部平扫"},
    "contained": [
        {
            "resourceType": "Patient",
            "id": "pat",
            "identifier": [{"system": "urn:oid:1.2.156.112604.1.1", "value": "0012345678"}],
            "name": [{"family": "王", "given": ["小东"]}],
        },
        {
            "resourceType": "ImagingStudy",
            "id": "study",
            "identifier": [
                acsn("CT20240305001"),
                {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"},
            ],
        },
        {
            "resourceType": "Observation",
            "id": "findings",
            "status": "final",
            "code": {"text": "检查所见"},
            "valueString": FINDINGS,
        },
        {
            "resourceType": "Observation",
            "id": "impression",
            "status": "final",
            "code": {"text": "诊断意见"},
            "valueString": IMPRESSION,
        },
    ],
    "subject": {"reference": "#pat"},
    "effectiveDateTime": "2024-03-05T10:20:30",
    "issued": "2024-03-05T11:02:00+08:00",
    "resultsInterpreter": [{"display": "李明"}],
    "performer": [
        {"reference": "Organization/radiology", "display": "放射科"},
        {"display": "张伟"},
    ],
    "imagingStudy": [{"reference": "#study"}],
    "result": [{"reference": "#findings"}, {"reference": "#impression"}],
}


def test_chinese_ris_report_with_contained_resources() -> None:
    doc = read_diagnostic_report(CHINESE)

    assert doc.source == "fhir"
    assert doc.report_key == "fhir:urn:oid:1.2.156.112604.1.2.9|R20240305001"
    assert (doc.status, doc.source_status) == ("final", "final")
    assert doc.study_instance_uid == STUDY_UID
    assert doc.accession_number == "CT20240305001"
    assert doc.patient_id == "0012345678"
    assert doc.patient_name == "王小东"
    assert doc.title == "CT 胸部平扫"
    assert doc.modality == "CT"
    assert doc.findings == FINDINGS
    assert doc.impression == IMPRESSION
    assert doc.author == "李明"
    assert doc.verifier == "张伟"  # the Organization performer is not a verifier
    assert doc.effective_at == datetime(2024, 3, 5, 10, 20, 30)
    assert doc.effective_at.tzinfo is None
    assert doc.issued_at == datetime(2024, 3, 5, 11, 2, tzinfo=CST)
    assert doc.language == "zh-CN"
    assert not doc.has_pdf and doc.pdf_bytes is None
    assert doc.warnings == ()
    assert doc.original == CHINESE
    assert doc.original is not CHINESE


# Modelled on the FHIR R4 spec's radiology examples (diagnosticreport-example-f201-brainct,
# -ultrasound): coded title, subject by reference, conclusion and conclusionCode.
SPEC_LIKE = {
    "resourceType": "DiagnosticReport",
    "id": "f201",
    "identifier": [
        {"system": "http://www.bmc.nl/zorgportal/identifiers/reports", "value": "nr1239044"}
    ],
    "status": "corrected",
    "category": [
        {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "394914008", "display": "Radiology"},
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"},
            ]
        }
    ],
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "24727-0", "display": "CT HEAD W IV CONTRAST"}
        ]
    },
    "subject": {
        "reference": "Patient/f201",
        "identifier": {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "123456789"},
        "display": "Roel",
    },
    "effectiveDateTime": "2012-12-01T12:00:00+01:00",
    "issued": "2012-12-01T12:00:00+01:00",
    "performer": [
        {"reference": "Organization/f203", "display": "Blijdorp MC"},
        {"reference": "Practitioner/f202", "display": "Luigi Maas"},
    ],
    "resultsInterpreter": [{"reference": "Practitioner/f201", "display": "Dokter Bronsig"}],
    "imagingStudy": [
        {
            "reference": f"ImagingStudy/{STUDY_UID}",
            "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"},
        }
    ],
    "conclusion": "CT brains: large tumor sphenoid/clivus.",
    "conclusionCode": [
        {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "188340000",
                    "display": "Malignant tumor of craniopharyngeal duct",
                }
            ]
        }
    ],
}


def test_spec_like_radiology_report_sent_as_json_bytes() -> None:
    doc = read_diagnostic_report(json.dumps(SPEC_LIKE).encode("utf-8"))

    assert doc.report_key == "fhir:http://www.bmc.nl/zorgportal/identifiers/reports|nr1239044"
    assert (doc.status, doc.source_status) == ("amended", "corrected")
    assert doc.study_instance_uid == STUDY_UID
    assert doc.accession_number == ""
    assert (doc.patient_id, doc.patient_name) == ("123456789", "Roel")
    assert doc.title == "CT HEAD W IV CONTRAST"
    assert doc.modality == ""  # v2-0074 RAD is a service section, not a DICOM modality
    # conclusion wins; conclusionCode is only used without one
    assert doc.impression == "CT brains: large tumor sphenoid/clivus."
    assert doc.findings == ""
    assert doc.author == "Dokter Bronsig"
    assert doc.verifier == "Luigi Maas"
    assert doc.effective_at == datetime(2012, 12, 1, 11, 0, tzinfo=UTC)
    assert doc.effective_at.utcoffset() == timedelta(hours=1)
    assert doc.original == SPEC_LIKE


def test_json_text_with_byte_order_mark() -> None:
    doc = read_diagnostic_report("\ufeff" + json.dumps(minimal()))
    assert doc.report_key == "fhir:urn:oid:1.2.156.112604.1.2.9|RPT-1"


# --- presentedForm, narrative ------------------------------------------------------------


def text_form(content_type: str, data: bytes) -> dict[str, Any]:
    return {"contentType": content_type, "data": b64(data)}


PLAIN_REPORT = f"检查所见：\n{FINDINGS}\n诊断意见：\n{IMPRESSION}"


def test_presented_form_plain_utf8_without_charset() -> None:
    body = minimal(presentedForm=[text_form("text/plain", PLAIN_REPORT.encode("utf-8"))])
    assert read_diagnostic_report(body).findings == PLAIN_REPORT


def test_presented_form_plain_gb18030_declared() -> None:
    form = text_form("text/plain; charset=GB18030", PLAIN_REPORT.encode("gb18030"))
    doc = read_diagnostic_report(minimal(presentedForm=[form]))
    assert doc.findings == PLAIN_REPORT
    assert doc.warnings == ()


def test_presented_form_plain_gb18030_undeclared_falls_back() -> None:
    form = text_form("text/plain", PLAIN_REPORT.encode("gb18030"))
    assert read_diagnostic_report(minimal(presentedForm=[form])).findings == PLAIN_REPORT


def test_presented_form_html_is_stripped_keeping_paragraphs() -> None:
    html = (
        "<html><head><title>报告</title><style>p{color:red}</style></head><body>"
        "<h2>检查所见</h2><p>双肺纹理清晰，\n   右肺上叶见一直径约8mm结节</p>"
        "<p>诊断意见：右肺上叶结节<br/>建议随访 &amp; 复查</p></body></html>"
    )
    form = text_form("text/html; charset=utf-8", html.encode("utf-8"))
    doc = read_diagnostic_report(minimal(presentedForm=[form]))
    assert doc.findings == (
        "检查所见\n\n双肺纹理清晰， 右肺上叶见一直径约8mm结节\n\n"
        "诊断意见：右肺上叶结节\n建议随访 & 复查"
    )


def test_plain_text_is_preferred_over_html() -> None:
    forms = [
        text_form("text/html", b"<p>html version</p>"),
        text_form("text/plain", b"plain version"),
    ]
    assert read_diagnostic_report(minimal(presentedForm=forms)).findings == "plain version"


def test_presented_form_without_data_is_a_warning() -> None:
    form = {"contentType": "text/plain", "url": "https://ris.example.cn/r/1.txt"}
    doc = read_diagnostic_report(minimal(presentedForm=[form]))
    assert doc.findings == ""
    assert doc.warnings == ("presentedForm[0] has no inline data (only a url); not read",)


def test_narrative_is_the_last_resort_for_findings() -> None:
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>检查所见</b>：'
        f"{FINDINGS}</p><pre>line 1\n  line 2</pre></div>"
    )
    doc = read_diagnostic_report(minimal(text={"status": "generated", "div": div}))
    assert doc.findings == f"检查所见：{FINDINGS}\n\nline 1\nline 2"


def test_html_to_text_drops_script_and_handles_tables() -> None:
    html = "<script>alert(1)</script><table><tr><td>a</td><td>b&lt;c</td></tr></table>"
    assert html_to_text(html) == "a\n\nb<c"
    assert html_to_text("") == ""


def test_pdf_is_kept_and_left_out_of_original() -> None:
    pdf = b"%PDF-1.4\n% report\n%%EOF\n"
    body = minimal(
        presentedForm=[
            text_form("text/plain", "所见".encode()),
            {"contentType": "application/pdf", "language": "zh-CN", "data": b64(pdf)},
        ]
    )
    before = copy.deepcopy(body)
    doc = read_diagnostic_report(body)
    assert doc.has_pdf is True
    assert doc.pdf_bytes == pdf
    assert doc.findings == "所见"
    stored = doc.original["presentedForm"][1]
    assert stored["contentType"] == "application/pdf"
    assert stored["data"].startswith("(omitted:")
    assert b64(pdf) not in json.dumps(doc.original)
    assert body == before  # the caller's dict is untouched


def test_pdf_over_the_limit_before_decoding() -> None:
    too_long = "A" * (fhir._MAX_PDF_BASE64 + 4)
    body = minimal(
        presentedForm=[
            text_form("text/plain", b"x"),
            {"contentType": "application/pdf", "data": too_long},
        ]
    )
    assert error_of(body).field == "DiagnosticReport.presentedForm[1].data"


def test_pdf_over_the_limit_after_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir, "MAX_PDF_BYTES", 10)
    body = minimal(presentedForm=[{"contentType": "application/pdf", "data": b64(b"%PDF-" * 5)}])
    err = error_of(body)
    assert err.field == "DiagnosticReport.presentedForm[0].data"
    assert "larger than" in err.message


def test_not_a_pdf_is_a_warning() -> None:
    body = minimal(presentedForm=[{"contentType": "application/pdf", "data": b64(b"<html>")}])
    doc = read_diagnostic_report(body)
    assert doc.pdf_bytes == b"<html>"
    assert doc.warnings == ("presentedForm[0] is labelled application/pdf but is no PDF",)


# --- Identity, study, accession, patient ---------------------------------------------------


@pytest.mark.parametrize(
    ("identifiers", "rid", "key"),
    [
        ([{"system": "urn:ris", "value": "R1"}], "x", "fhir:urn:ris|R1"),
        ([{"value": "R1"}, {"system": "urn:ris", "value": "R2"}], None, "fhir:urn:ris|R2"),
        ([{"value": "R1"}], "x", "fhir:|R1"),
        ([acsn("A1")], "srv-42", "fhir-id:srv-42"),
        (None, "srv-42", "fhir-id:srv-42"),
    ],
)
def test_report_key(identifiers: list[dict[str, Any]] | None, rid: str | None, key: str) -> None:
    body = minimal(identifier=identifiers, id=rid)
    assert read_diagnostic_report(body).report_key == key


def test_study_uid_from_bare_identifier_value_and_reference_uid() -> None:
    bare = minimal(imagingStudy=[{"identifier": {"system": "urn:dicom:uid", "value": STUDY_UID}}])
    assert read_diagnostic_report(bare).study_instance_uid == STUDY_UID
    by_ref = minimal(imagingStudy=[{"reference": "ImagingStudy/1.2.3.4"}])
    assert read_diagnostic_report(by_ref).study_instance_uid == "1.2.3.4"


def test_server_id_reference_links_by_accession_with_a_warning() -> None:
    body = minimal(
        imagingStudy=[{"reference": "ImagingStudy/ct-4711"}],
        basedOn=[{"reference": "ServiceRequest/9", "identifier": acsn("CT4711")}],
    )
    doc = read_diagnostic_report(body)
    assert doc.study_instance_uid == ""
    assert doc.accession_number == "CT4711"
    assert len(doc.warnings) == 1 and "server id" in doc.warnings[0]


def test_several_studies_first_wins_with_warning() -> None:
    body = minimal(
        imagingStudy=[
            {"reference": "ImagingStudy/1.2.3"},
            {"identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.4"}},
        ]
    )
    doc = read_diagnostic_report(body)
    assert doc.study_instance_uid == "1.2.3"
    assert doc.warnings == ("2 different studies are named; the first was used",)


def test_accession_from_contained_service_request() -> None:
    body = minimal(
        imagingStudy=None,
        contained=[{"resourceType": "ServiceRequest", "id": "sr", "identifier": [acsn("MR9")]}],
        basedOn=[{"reference": "#sr"}],
    )
    doc = read_diagnostic_report(body)
    assert (doc.accession_number, doc.study_instance_uid) == ("MR9", "")


def test_accession_from_the_report_identifier_comes_first() -> None:
    body = minimal(identifier=[acsn("A-OWN"), {"value": "R1"}], basedOn=[{"identifier": acsn("B")}])
    assert read_diagnostic_report(body).accession_number == "A-OWN"


def test_patient_from_contained_patient_name_text_and_western_name() -> None:
    with_text = minimal(
        contained=[{"resourceType": "Patient", "id": "p", "name": [{"text": "王小东"}]}],
        subject={"reference": "#p", "identifier": {"value": "PID-1"}},
    )
    doc = read_diagnostic_report(with_text)
    assert (doc.patient_id, doc.patient_name) == ("PID-1", "王小东")
    western = minimal(
        contained=[
            {
                "resourceType": "Patient",
                "id": "p",
                "identifier": [{"value": "MRN-7"}, {"value": "other"}],
                "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
            }
        ],
        subject={"reference": "#p"},
    )
    doc = read_diagnostic_report(western)
    assert (doc.patient_id, doc.patient_name) == ("MRN-7", "Chalmers Peter James")


def test_people_from_contained_practitioners_and_roles() -> None:
    body = minimal(
        contained=[
            {
                "resourceType": "Practitioner",
                "id": "dr1",
                "name": [{"family": "李", "given": ["明"]}],
            },
            {"resourceType": "Organization", "id": "org", "name": "放射科"},
        ],
        resultsInterpreter=[{"reference": "#dr1"}],
        performer=[
            {"reference": "#org", "display": "放射科"},
            {"type": "Organization", "display": "某医院"},
            {"reference": "https://fhir.example.cn/PractitionerRole/77", "display": "张伟"},
        ],
    )
    doc = read_diagnostic_report(body)
    assert (doc.author, doc.verifier) == ("李明", "张伟")


def test_impression_from_observations_and_conclusion_codes() -> None:
    body = minimal(
        contained=[
            {
                "resourceType": "Observation",
                "id": "imp",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "19005-8"}]},
                "valueString": IMPRESSION,
            },
            {
                "resourceType": "Observation",
                "id": "fnd",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "59776-5"}]},
                "valueString": FINDINGS,
            },
            {
                "resourceType": "Observation",
                "id": "other",
                "status": "final",
                "code": {"text": "CT值"},
                "valueString": "45 HU",
            },
        ],
        result=[{"reference": "#fnd"}, {"reference": "#imp"}, {"reference": "#other"}],
        conclusionCode=[
            {"coding": [{"system": "http://snomed.info/sct", "display": "Lung nodule"}]}
        ],
    )
    doc = read_diagnostic_report(body)
    assert doc.findings == FINDINGS
    assert doc.impression == f"{IMPRESSION}\nLung nodule"


def test_external_observation_is_a_warning() -> None:
    doc = read_diagnostic_report(minimal(result=[{"reference": "Observation/9"}]))
    assert doc.warnings == ("result[0] is not a contained Observation; not read",)


@pytest.mark.parametrize(
    ("source", "status"),
    [
        ("registered", "preliminary"),
        ("partial", "preliminary"),
        ("preliminary", "preliminary"),
        ("amended", "amended"),
        ("appended", "amended"),
        ("cancelled", "cancelled"),
        ("entered-in-error", "cancelled"),
    ],
)
def test_status_mapping(source: str, status: str) -> None:
    doc = read_diagnostic_report(minimal(status=source))
    assert (doc.status, doc.source_status) == (status, source)


# --- Times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-05", datetime(2024, 3, 5)),
        ("2024-03-05T10:20:30", datetime(2024, 3, 5, 10, 20, 30)),
        ("2024-03-05 10:20", datetime(2024, 3, 5, 10, 20)),
        ("2024-03-05T10:20:30.1234567Z", datetime(2024, 3, 5, 10, 20, 30, 123456, UTC)),
        ("2024-03-05T10:20:30+08:00", datetime(2024, 3, 5, 10, 20, 30, tzinfo=CST)),
    ],
)
def test_effective_date_time(value: str, expected: datetime) -> None:
    doc = read_diagnostic_report(minimal(effectiveDateTime=value))
    assert doc.effective_at == expected
    assert (doc.effective_at.tzinfo is None) == (expected.tzinfo is None)


def test_effective_period_start_and_partial_dates() -> None:
    body = minimal(effectivePeriod={"start": "2024-03", "end": "2024-03-06"}, issued="2024-03-06")
    doc = read_diagnostic_report(body)
    assert doc.effective_at == datetime(2024, 3, 1)
    assert doc.issued_at == datetime(2024, 3, 6)
    assert doc.warnings == ("effectivePeriod.start has no day; the 1st was used",)


# --- Errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"resourceType": "DiagnosticReport",', "not JSON"),
        ("<DiagnosticReport/>", "not JSON"),
        ('{"resourceType": "DiagnosticReport"}'.encode("utf-16"), "not UTF-8"),
        (json.dumps({"code": {"text": "CT 胸部"}}, ensure_ascii=False).encode("gb18030"), "UTF-8"),
        (b"[]", "an array"),
        (b'"final"', "a string"),
    ],
)
def test_body_that_is_not_a_json_object(body: bytes | str, text: str) -> None:
    err = error_of(body)
    assert err.field == "DiagnosticReport"
    assert text in err.message


@pytest.mark.parametrize(
    ("kind", "text"), [("Patient", "'Patient'"), ("Bundle", "not a Bundle"), (None, "missing")]
)
def test_wrong_resource_type(kind: str | None, text: str) -> None:
    err = error_of(minimal(resourceType=kind))
    assert err.field == "DiagnosticReport.resourceType"
    assert text in err.message


@pytest.mark.parametrize(
    ("status", "text"), [("unknown", "'unknown'"), (None, "missing"), ("done", "not a FHIR")]
)
def test_bad_status(status: str | None, text: str) -> None:
    err = error_of(minimal(status=status))
    assert err.field == "DiagnosticReport.status"
    assert text in err.message


def test_validation_error_names_the_element_with_indexes() -> None:
    body = minimal(
        imagingStudy=[
            {"reference": "ImagingStudy/1.2.3"},
            {"identifier": {"system": "urn:dicom:uid", "value": 123}},
        ]
    )
    err = error_of(body)
    assert err.field == "DiagnosticReport.imagingStudy[1].identifier.value"
    assert "Input should be a valid string" in err.message


def test_validation_error_missing_and_unknown_elements() -> None:
    missing = error_of(minimal(code=None))
    assert missing.field == "DiagnosticReport.code"
    assert missing.message.startswith("required element is missing")
    unknown = error_of(minimal(reportDoctor="李明"))
    assert unknown.field == "DiagnosticReport.reportDoctor"
    assert "not an element of FHIR R4 DiagnosticReport" in unknown.message
    several = error_of(minimal(code=None, reportDoctor="李明"))
    assert "(and 1 more problems)" in several.message


def test_validation_error_in_extension_of_primitive() -> None:
    err = error_of(minimal(_status={"extension": [{"url": 5}]}))
    assert err.field == "DiagnosticReport._status.extension[0].url"


def test_minimal_contained_resources_are_not_refused() -> None:
    # R4B's model alone would refuse this ImagingStudy (no status, no subject).
    body = minimal(
        imagingStudy=[{"reference": "#s"}],
        contained=[
            {
                "resourceType": "ImagingStudy",
                "id": "s",
                "identifier": [{"system": "urn:dicom:uid", "value": "1.2.3"}],
            }
        ],
    )
    assert read_diagnostic_report(body).study_instance_uid == "1.2.3"


def test_contained_entry_that_is_not_a_resource() -> None:
    assert error_of(minimal(contained=["Patient"])).field == "DiagnosticReport.contained[0]"
    assert (
        error_of(minimal(contained={"resourceType": "Patient"})).field
        == "DiagnosticReport.contained"
    )


@pytest.mark.parametrize("identifiers", [None, [acsn("CT1")], [{"system": "urn:ris"}]])
def test_no_identity(identifiers: list[dict[str, Any]] | None) -> None:
    err = error_of(minimal(identifier=identifiers))
    assert err.field == "DiagnosticReport.identifier"
    assert "amendments" in err.message


def test_no_study_link() -> None:
    err = error_of(minimal(imagingStudy=None, identifier=[{"value": "R1"}]))
    assert err.field == "DiagnosticReport.imagingStudy"
    assert "accession" in err.message


def test_unresolvable_contained_study_is_no_link() -> None:
    body = minimal(imagingStudy=[{"reference": "#missing"}])
    assert error_of(body).field == "DiagnosticReport.imagingStudy"


@pytest.mark.parametrize(
    "uid",
    ["urn:oid:1.2.840.01", "1.2..3", "1.2.3.", "1.2.abc", "urn:uuid:0b5f0e1c", "1." + "2" * 63],
)
def test_invalid_study_uid_in_identifier(uid: str) -> None:
    body = minimal(imagingStudy=[{"identifier": {"system": "urn:dicom:uid", "value": uid}}])
    err = error_of(body)
    assert err.field == "DiagnosticReport.imagingStudy[0].identifier.value"
    assert "not a DICOM UID" in err.message


def test_invalid_study_uid_in_contained_imaging_study() -> None:
    body = copy.deepcopy(CHINESE)
    body["contained"][1]["identifier"][1]["value"] = "urn:oid:1.2.840.0113619"
    err = error_of(body)
    assert err.field == "DiagnosticReport.contained[1].identifier[1].value"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"effectiveDateTime": "2024-13-01"}, "DiagnosticReport.effectiveDateTime"),
        ({"effectiveDateTime": "2024-02-30T10:00:00"}, "DiagnosticReport.effectiveDateTime"),
        ({"effectiveDateTime": "05/03/2024"}, "DiagnosticReport.effectiveDateTime"),
        ({"effectiveDateTime": 20240305}, "DiagnosticReport.effectiveDateTime"),
        ({"issued": "yesterday"}, "DiagnosticReport.issued"),
        ({"issued": "2024-03-05T24:00:00+08:00"}, "DiagnosticReport.issued"),
        ({"effectivePeriod": {"start": "2024-3-5"}}, "DiagnosticReport.effectivePeriod.start"),
        ({"effectivePeriod": {"end": "soon"}}, "DiagnosticReport.effectivePeriod.end"),
        (
            {"effectiveDateTime": "2024-03-05", "effectivePeriod": {"start": "2024-03-05"}},
            "DiagnosticReport.effective[x]",
        ),
    ],
)
def test_unparseable_times(changes: dict[str, Any], field: str) -> None:
    assert error_of(minimal(**changes)).field == field


def test_invalid_base64_pdf() -> None:
    body = minimal(presentedForm=[{"contentType": "application/pdf", "data": "!!!!"}])
    assert error_of(body).field == "DiagnosticReport.presentedForm[0].data"
