"""Reading DICOM SR and Encapsulated PDF reports into ReportDocument: real files (shared set
and pydicom's bundled ones), generated Chinese reports, every validation error, hostile trees."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
    KeyObjectSelectionDocumentStorage,
    XRayRadiationDoseSRStorage,
)
from tests.conftest import shared_file
from tests.factories import make_pdf_report, make_text_sr, to_bytes

from cloudfilm.infrastructure.dicom.part10 import read_header
from cloudfilm.infrastructure.reports.dicom import (
    MAX_DEPTH,
    MAX_ITEMS,
    REPORT_SOP_CLASSES,
    is_report,
    read_dicom_report,
)
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError

FINDINGS = "双肺纹理清晰，未见明确结节及实变影。\n纵隔居中，未见肿大淋巴结。"
IMPRESSION = "胸部CT平扫未见明显异常。"
CHINESE_NAME = "Wang^XiaoDong=王^小东"


def read_file(path: Path) -> ReportDocument:
    """Read as the archive does: the header of the stored file, then the report."""
    return read_dicom_report(read_header(path).dataset)


def via_file(ds: Dataset, tmp_path: Path) -> ReportDocument:
    path = tmp_path / "report.dcm"
    path.write_bytes(to_bytes(ds))
    return read_file(path)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def content_item(value_type: str, name: str = "", *, relationship: str = "CONTAINS",
                 concept: tuple[str, str] = ("T1", "99TEST"), **attrs: Any) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    if name:
        item.ConceptNameCodeSequence = [code(concept[0], concept[1], name)]
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def text(name: str, value: str, **kwargs: Any) -> Dataset:
    return content_item("TEXT", name, TextValue=value, **kwargs)


def container(name: str, children: list[Dataset], **kwargs: Any) -> Dataset:
    return content_item("CONTAINER", name, ContentSequence=children,
                        ContinuityOfContent="SEPARATE", **kwargs)


def sr_with(content: list[Dataset], **factory_args: Any) -> Dataset:
    """A generated SR whose content tree is replaced by ``content``."""
    ds = make_text_sr(**factory_args)
    ds.ContentSequence = content
    return ds


# --- SOP classes -------------------------------------------------------------------------


@pytest.mark.parametrize("uid", [BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage,
                                 Comprehensive3DSRStorage, ExtensibleSRStorage,
                                 EncapsulatedPDFStorage])
def test_narrative_sr_and_pdf_are_reports(uid: str) -> None:
    assert is_report(uid)
    assert is_report(uid + "\x00")  # UI padding as stored


@pytest.mark.parametrize("uid", [KeyObjectSelectionDocumentStorage, XRayRadiationDoseSRStorage,
                                 "1.2.840.10008.5.1.4.1.1.88.50",  # Mammography CAD SR
                                 CTImageStorage, ""])
def test_key_objects_dose_cad_and_images_are_not_reports(uid: str) -> None:
    assert not is_report(uid)


def test_report_sop_classes_are_exactly_six() -> None:
    assert len(REPORT_SOP_CLASSES) == 6


# --- real files from the shared set ------------------------------------------------------


def test_offis_basic_text_sr() -> None:
    doc = read_file(shared_file("reports/basic_text_SR_offis.dcm"))
    assert doc.source == "dicom-sr"
    assert doc.report_key == "sop:1.2.276.0.7230010.3.1.4.1787205428.166.1117461927.10"
    assert doc.sop_instance_uid == "1.2.276.0.7230010.3.1.4.1787205428.166.1117461927.10"
    assert doc.study_instance_uid == "1.2.276.0.7230010.3.1.2.1787205428.166.1117461927.5"
    assert (doc.status, doc.source_status) == ("preliminary", "PARTIAL/UNVERIFIED")
    assert doc.title == "Document Title"
    # The observer's organisation (HAS OBS CONTEXT) is metadata, not report text.
    assert doc.findings == "Report Text: Enter text"
    assert doc.impression == ""
    assert doc.patient_name == "Last Name First Name"
    assert doc.issued_at == datetime(2005, 5, 30, 16, 5, 27)
    assert doc.effective_at is None  # StudyDate is empty
    assert doc.modality == ""
    assert doc.original["sop_class"] == BasicTextSRStorage
    assert [node["type"] for node in doc.original["tree"]] == ["CODE", "PNAME", "TEXT", "CODE",
                                                               "CONTAINER"]


def test_latin2_basic_text_sr_decodes_polish() -> None:
    doc = read_file(shared_file("reports/basic_text_SR_latin2.dcm"))
    assert doc.title == "Opis badania radiologicznego"
    assert doc.findings.split("\n") == [
        "Opisywane procedury: iodsa",
        "Oddział: sdadasdas",
        "Prawo wykonywania zawodu: 0000000",
        "Opis badania: dgtfhglhghk dgtfhglhghk dgtfhglhghk",
    ]
    names = [node["name"] for node in doc.original["tree"]]
    assert "Język treści" in names
    assert "Imię i Nazwisko osoby opisującej" in names
    assert doc.author == "i7big rtg"  # 121008 Person Observer Name
    assert doc.language == "pl"
    # "Procedure reported" is free text here, not a code: no modality is guessed from it.
    assert doc.modality == ""
    assert (doc.patient_id, doc.patient_name, doc.accession_number) == ("P22", "Testowy Teste",
                                                                        "73")
    assert doc.effective_at == datetime(2014, 4, 4, 9, 33, 23)
    assert doc.issued_at == datetime(2014, 5, 7, 10, 41, 31)
    assert doc.warnings == ()


def check_offis_comprehensive(doc: ReportDocument) -> None:
    assert doc.title == "Diagnosis"
    assert (doc.status, doc.source_status) == ("amended", "COMPLETE/VERIFIED")
    assert doc.predecessor_keys == ("sop:1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.1",)
    assert doc.verifier == "Riesmeier Jörg"
    assert doc.issued_at == datetime(2001, 2, 13, 18, 47, 46)
    assert doc.patient_name == "Test S R"
    lines = doc.findings.split("\n")
    assert lines[:2] == ["Text Code: A mass of", "Text Code: was detected."]
    # CR, LF, CR LF and LF CR line breaks all become one newline.
    assert "Code: Sample Text\nA\nB\nC\nCode: Inferred Sample Text\nNew line.\n&%$§" in (
        doc.findings)
    assert lines[-1] == "Code: Sample Text 2"
    # A by-reference relationship has no ValueType and is not an error.
    tcoord = doc.original["tree"][2]["children"][2]
    assert tcoord["type"] == "TCOORD"
    assert (tcoord["children"][0]["type"], tcoord["children"][0]["value"]) == ("REFERENCE",
                                                                                "1\\3\\2")
    assert doc.warnings == ()


def test_offis_comprehensive_sr_nested() -> None:
    check_offis_comprehensive(read_file(shared_file("reports/comprehensive_SR_nested.dcm")))


def test_osirix_sr_with_reference() -> None:
    doc = read_file(shared_file("reports/SR_with_reference/IM0_SR.dcm"))
    assert doc.title == "Annotations"
    assert doc.findings.startswith("Image Reference: {\n    albums =")
    assert "isKeyImage = 1;" in doc.findings
    assert doc.accession_number == "R0A8A2D1AI"
    assert (doc.patient_id, doc.patient_name) == ("ANON0A8A2D1RJ", "Anonymous Male 1960")
    assert doc.study_instance_uid == (
        "1.2.840.113564.9.1.20050211120557.20141206125743.24926955301")
    assert doc.effective_at == datetime(2014, 12, 6, 12, 0)
    assert doc.issued_at == datetime(2018, 3, 28, 8, 22, 47, 689453)
    # OsiriX also puts a plist in EncapsulatedDocument; an SR is still not a PDF report.
    assert not doc.has_pdf
    assert doc.status == "preliminary"


def test_encapsulated_pdf_coronarography() -> None:
    doc = read_file(shared_file("reports/encapsulated_pdf_coronarography.dcm"))
    assert doc.source == "dicom-pdf"
    assert doc.report_key == "sop:1.2.276.0.7230010.3.1.4.1901948703.36080.1484835349.618"
    assert doc.has_pdf and doc.pdf_bytes is None
    assert doc.title == "PDF report"  # neither DocumentTitle nor a concept name
    assert doc.findings.startswith("Doctor Sample\nAddress, City, ST ZIP Code")
    assert "Dear Patient,\nLorem ipsum dolor sit amet" in doc.findings
    assert doc.findings.endswith("Sincerely,\nDoctor Sample")
    assert (doc.status, doc.source_status) == ("final", "")
    assert (doc.patient_id, doc.patient_name) == ("3456", "CARDIO")
    assert doc.effective_at == datetime(2013, 8, 12, 16, 47, 9)
    assert doc.issued_at == datetime(2017, 1, 19, 15, 15, 49)
    assert doc.original == {"sop_class": EncapsulatedPDFStorage, "mime": "application/pdf",
                            "pdf_bytes": 20576, "pages": 1}
    assert doc.warnings == ()


def test_sr_with_empty_numeric_elements_is_read() -> None:
    doc = read_file(shared_file("malformed/reportsi_with_empty_number_tags.dcm"))
    assert doc.title == "Document Title"
    assert doc.findings == "Report Text: Enter text"
    assert doc.status == "preliminary"


# --- pydicom's bundled files (present in every clone) ------------------------------------


@pytest.mark.parametrize("name", ["reportsi.dcm", "reportsi_with_empty_number_tags.dcm"])
def test_bundled_basic_text_sr(name: str) -> None:
    doc = read_dicom_report(dcmread(get_testdata_file(name)))
    assert doc.title == "Document Title"
    assert doc.findings == "Report Text: Enter text"
    assert (doc.status, doc.source_status) == ("preliminary", "PARTIAL/UNVERIFIED")


def test_bundled_comprehensive_sr() -> None:
    check_offis_comprehensive(read_dicom_report(dcmread(get_testdata_file("test-SR.dcm"))))


# --- generated Chinese reports -----------------------------------------------------------


@pytest.mark.parametrize(("charset", "codec"), [("ISO_IR 192", "utf-8"),
                                                ("GB18030", "gb18030")])
def test_chinese_sr(charset: str, codec: str, tmp_path: Path) -> None:
    ds = make_text_sr(charset=charset, patient_name=CHINESE_NAME, accession="A2024001",
                      study_uid="1.2.3.4.5", sop_uid="1.2.3.4.5.6")
    assert FINDINGS.split("\n")[0].encode(codec) in to_bytes(ds)  # really encoded so
    doc = via_file(ds, tmp_path)
    assert doc.findings == FINDINGS
    assert doc.impression == IMPRESSION
    assert doc.title == "CT 胸部平扫报告"
    assert doc.patient_name == "王小东"  # the ideographic group, without separators
    assert (doc.author, doc.verifier) == ("李医生", "张主任")
    assert doc.modality == "CT"  # from Procedure reported (121058) LN "CT Chest"
    assert (doc.status, doc.source_status) == ("final", "COMPLETE/VERIFIED")
    assert (doc.report_key, doc.sop_instance_uid) == ("sop:1.2.3.4.5.6", "1.2.3.4.5.6")
    assert (doc.study_instance_uid, doc.accession_number) == ("1.2.3.4.5", "A2024001")
    assert doc.patient_id == "P0001"
    assert doc.effective_at == datetime(2024, 1, 5, 10, 15)
    assert doc.issued_at == datetime(2024, 1, 5, 11, 30)
    assert doc.predecessor_keys == ()
    assert doc.warnings == ()
    findings = doc.original["tree"][3]
    assert (findings["type"], findings["name"]) == ("CONTAINER", "Findings")
    assert findings["children"][0]["value"] == FINDINGS


@pytest.mark.parametrize("charset", ["ISO_IR 192", "GB18030"])
def test_values_pydicom_already_decoded_are_used(charset: str) -> None:
    ds = make_text_sr(charset=charset, patient_name=CHINESE_NAME)
    str(ds)  # converts every element with pydicom's decoder, as any earlier reader would
    assert not isinstance(ds.ContentSequence[3].ContentSequence[0].get_item("TextValue").value,
                          bytes)
    doc = read_dicom_report(ds)
    assert (doc.findings, doc.impression, doc.patient_name) == (FINDINGS, IMPRESSION, "王小东")
    assert (doc.author, doc.verifier) == ("李医生", "张主任")


def test_alphabetic_name_has_spaces_for_carets() -> None:
    assert read_dicom_report(make_text_sr(patient_name="Wang^XiaoDong")).patient_name == (
        "Wang XiaoDong")


def test_gb18030_labelled_latin1_is_recovered_with_a_warning() -> None:
    ds = make_text_sr(charset="GB18030")
    ds.SpecificCharacterSet = "ISO_IR 100"  # the classic mislabel; values are still raw bytes
    doc = read_dicom_report(ds)
    assert doc.findings == FINDINGS
    assert doc.title == "CT 胸部平扫报告"
    assert any("read as GB18030" in warning for warning in doc.warnings)
    assert not any("双肺" in warning for warning in doc.warnings)  # no text in warnings


def test_amended_sr_names_its_predecessor() -> None:
    doc = read_dicom_report(make_text_sr(predecessor_sop_uid="1.2.3.99"))
    assert (doc.status, doc.source_status) == ("amended", "COMPLETE/VERIFIED")
    assert doc.predecessor_keys == ("sop:1.2.3.99",)
    assert doc.report_key != "sop:1.2.3.99"


@pytest.mark.parametrize(("verified", "complete", "source_status"), [
    (False, True, "COMPLETE/UNVERIFIED"),
    (False, False, "PARTIAL/UNVERIFIED"),
    (True, False, "PARTIAL/VERIFIED"),
])
def test_unverified_or_partial_sr_is_preliminary(verified: bool, complete: bool,
                                                 source_status: str) -> None:
    doc = read_dicom_report(make_text_sr(verified=verified, complete=complete,
                                         predecessor_sop_uid="1.2.3.99"))
    assert (doc.status, doc.source_status) == ("preliminary", source_status)
    assert doc.verifier == ("张主任" if verified else "")
    assert doc.issued_at == datetime(2024, 1, 5, 11, 30)  # ContentDate/Time without verifier


def test_author_observer_sequence_wins_over_the_tree() -> None:
    ds = make_text_sr()
    observer = Dataset()
    observer.ObserverType = "PSN"
    observer.PersonName = "Li^Ming=李^明"
    ds.AuthorObserverSequence = [observer]
    assert read_dicom_report(ds).author == "李明"


def test_accession_from_referenced_request_sequence() -> None:
    ds = make_text_sr(accession="")
    request = Dataset()
    request.AccessionNumber = "REQ-7"
    request.StudyInstanceUID = ds.StudyInstanceUID
    ds.ReferencedRequestSequence = [request]
    assert read_dicom_report(ds).accession_number == "REQ-7"


def test_last_verifier_gives_issued_at() -> None:
    ds = make_text_sr()
    second = Dataset()
    second.VerifyingObserverName = "Zhao^Qiang"
    second.VerifyingOrganization = "上级医院"
    second.VerificationDateTime = "20240106090000"
    ds.VerifyingObserverSequence.append(second)
    doc = read_dicom_report(ds)
    assert (doc.verifier, doc.issued_at) == ("张主任", datetime(2024, 1, 6, 9, 0))


def test_chinese_section_names_and_other_text_in_document_order() -> None:
    ds = sr_with([
        text("患者主诉", "咳嗽两周"),
        container("检查所见", [
            text("检查所见", "右肺上叶见结节影。"),
            content_item("NUM", "结节直径", MeasuredValueSequence=[_measured("8", "mm")]),
            content_item("CODE", "形态", ConceptCodeSequence=[code("T2", "99TEST", "分叶状")]),
        ]),
        container("诊断意见", [text("诊断意见", "右肺上叶结节，建议随访。")]),
        text("印象", "较前片无变化。"),
        content_item("NUM", "CT值", MeasuredValueSequence=[_measured("35", "[hnsf'U]")]),
    ])
    doc = read_dicom_report(ds)
    assert doc.findings == ("患者主诉: 咳嗽两周\n右肺上叶见结节影。\n结节直径: 8 mm\n形态: 分叶状")
    assert doc.impression == "右肺上叶结节，建议随访。\n较前片无变化。"


def test_english_section_codes_and_names() -> None:
    ds = sr_with([
        container("Findings", [text("Finding", "No focal lesion.", concept=("121071", "DCM"))],
                  concept=("121070", "DCM")),
        container("Summary", [text("Comment", "Stable.")]),
        container("Befund", [text("Text", "Keine Auffälligkeiten.")],
                  concept=("121072", "DCM")),  # coded Impressions, any language
    ])
    doc = read_dicom_report(ds)
    assert doc.findings == "No focal lesion."
    assert doc.impression == "Comment: Stable.\nText: Keine Auffälligkeiten."


def _measured(value: str, unit: str) -> Dataset:
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = [code(unit, "UCUM", unit)]
    return measured


@pytest.mark.parametrize(("concept", "expected"), [
    (("MR", "DCM", "Magnetic Resonance"), "MR"),
    (("24627-2", "LN", "CT Chest"), "CT"),
    (("X1", "99LOCAL", "头颅磁共振平扫"), "MR"),
    (("X2", "99LOCAL", "上腹部彩超"), "US"),
    (("X3", "99LOCAL", "Consultation"), ""),
])
def test_modality_from_coded_procedure_reported(concept: tuple[str, str, str],
                                                expected: str) -> None:
    ds = make_text_sr()
    ds.ContentSequence[2].ConceptCodeSequence = [code(*concept)]
    assert read_dicom_report(ds).modality == expected


# --- dates and times ---------------------------------------------------------------------


@pytest.mark.parametrize(("study_date", "study_time", "expected"), [
    ("20240105", "101530", datetime(2024, 1, 5, 10, 15, 30)),
    ("20240105", "10", datetime(2024, 1, 5, 10, 0)),
    ("20240105", "1015", datetime(2024, 1, 5, 10, 15)),
    ("20240105", "101530.5", datetime(2024, 1, 5, 10, 15, 30, 500000)),
    ("20240105", "101530.1234567", datetime(2024, 1, 5, 10, 15, 30, 123456)),
    ("20240105", "10:15:30", datetime(2024, 1, 5, 10, 15, 30)),  # ACR-NEMA
    ("2024.01.05", "101530", datetime(2024, 1, 5, 10, 15, 30)),  # ACR-NEMA
    ("20240105", "235960", datetime(2024, 1, 5, 23, 59, 59)),  # leap second
    ("20240105", "", datetime(2024, 1, 5)),
    ("", "101530", None),
])
def test_study_date_and_time(study_date: str, study_time: str,
                             expected: datetime | None) -> None:
    ds = make_text_sr()
    ds.StudyDate, ds.StudyTime = study_date, study_time
    doc = read_dicom_report(ds)
    assert doc.effective_at == expected
    assert doc.warnings == ()


@pytest.mark.parametrize(("study_date", "study_time", "field"), [
    ("20241305", "1015", "StudyDate"),
    ("yesterday", "1015", "StudyDate"),
    ("20240105", "2561", "StudyTime"),
])
def test_bad_study_date_or_time_is_a_warning(study_date: str, study_time: str,
                                             field: str) -> None:
    ds = make_text_sr()
    ds.StudyDate, ds.StudyTime = study_date, study_time
    doc = read_dicom_report(ds)
    assert any(warning.startswith(field) for warning in doc.warnings)


EAST_8 = timezone(timedelta(hours=8))


@pytest.mark.parametrize(("value", "expected"), [
    ("20240105113000", datetime(2024, 1, 5, 11, 30)),
    ("20240105113000.123456+0800", datetime(2024, 1, 5, 11, 30, 0, 123456, EAST_8)),
    ("202401051130-0500", datetime(2024, 1, 5, 11, 30, tzinfo=timezone(timedelta(hours=-5)))),
    ("2024", datetime(2024, 1, 1)),
    ("202401+0000", datetime(2024, 1, 1, tzinfo=UTC)),
])
def test_verification_datetime(value: str, expected: datetime) -> None:
    ds = make_text_sr()
    ds.VerifyingObserverSequence[0].VerificationDateTime = value
    issued_at = read_dicom_report(ds).issued_at
    assert issued_at == expected
    assert issued_at is not None and issued_at.tzinfo == expected.tzinfo


def test_timezone_offset_from_utc_makes_times_aware() -> None:
    ds = make_text_sr()
    ds.TimezoneOffsetFromUTC = "+0800"
    doc = read_dicom_report(ds)
    assert doc.effective_at == datetime(2024, 1, 5, 10, 15, tzinfo=EAST_8)
    assert doc.issued_at == datetime(2024, 1, 5, 11, 30, tzinfo=EAST_8)


# --- validation --------------------------------------------------------------------------


def _drop(path: str) -> Callable[[Dataset], None]:
    """A mutation deleting the element at a keyword path such as ``ContentSequence[3].X``."""
    def mutate(ds: Dataset) -> None:
        *parents, keyword = path.split(".")
        target = ds
        for step in parents:
            name, index = step.rstrip("]").split("[")
            target = getattr(target, name)[int(index)]
        delattr(target, keyword)
    return mutate


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


@pytest.mark.parametrize(("mutate", "field"), [
    (_drop("ContentSequence"), "ContentSequence"),
    (_set("ContentSequence", []), "ContentSequence"),
    (_drop("ContentSequence[3].ValueType"), "ContentSequence[3].ValueType"),
    (_drop("ContentSequence[4].ContentSequence[0].ValueType"),
     "ContentSequence[4].ContentSequence[0].ValueType"),
    (_drop("ConceptNameCodeSequence"), "ConceptNameCodeSequence"),
    (_set("ConceptNameCodeSequence", []), "ConceptNameCodeSequence"),
    (_drop("ContentSequence[3].ContentSequence[0].TextValue"),
     "ContentSequence[3].ContentSequence[0].TextValue"),
    (_drop("ValueType"), "ValueType"),
    (_set("ValueType", "TEXT"), "ValueType"),
    (_drop("SOPInstanceUID"), "SOPInstanceUID"),
    (_set("SOPClassUID", KeyObjectSelectionDocumentStorage), "SOPClassUID"),
    (_drop("SOPClassUID"), "SOPClassUID"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_sr_validation_errors_name_the_field(mutate: Callable[[Dataset], None],
                                             field: str) -> None:
    ds = make_text_sr()
    mutate(ds)
    with pytest.raises(ReportFormatError) as caught:
        read_dicom_report(ds)
    assert caught.value.field == field


def test_validation_error_after_the_wire(tmp_path: Path) -> None:
    ds = make_text_sr(charset="GB18030")
    del ds.ContentSequence[4].ContentSequence[0].TextValue
    with pytest.raises(ReportFormatError) as caught:
        via_file(ds, tmp_path)
    assert caught.value.field == "ContentSequence[4].ContentSequence[0].TextValue"


def test_unknown_value_type_is_a_warning() -> None:
    ds = make_text_sr()
    ds.ContentSequence[3].ValueType = "HOLOGRAM"
    doc = read_dicom_report(ds)
    assert "ContentSequence[3].ValueType: unknown value type 'HOLOGRAM'" in doc.warnings
    assert doc.findings == FINDINGS  # its children are still read


def test_sr_without_text_is_valid_with_a_warning() -> None:
    ds = sr_with([content_item("CODE", "Observer Type", relationship="HAS OBS CONTEXT",
                               ConceptCodeSequence=[code("121006", "DCM", "Person")])])
    doc = read_dicom_report(ds)
    assert (doc.findings, doc.impression) == ("", "")
    assert "the SR content tree holds no text" in doc.warnings
    assert doc.status == "final"


@pytest.mark.parametrize("keyword", ["CompletionFlag", "VerificationFlag"])
def test_missing_flag_is_preliminary_with_a_warning(keyword: str) -> None:
    ds = make_text_sr()
    delattr(ds, keyword)
    doc = read_dicom_report(ds)
    assert doc.status == "preliminary"
    assert f"{keyword}: missing; the report is read as preliminary" in doc.warnings


def test_text_is_stripped_of_nul_and_trailing_spaces() -> None:
    ds = sr_with([text("Finding", "右肺结节。 \x00", concept=("121071", "DCM"))])
    assert read_dicom_report(ds).findings == "右肺结节。"


# --- hostile trees -----------------------------------------------------------------------


def test_deep_tree_stops_at_the_depth_limit() -> None:
    ds = make_text_sr()
    node = container("Level 0", [])
    ds.ContentSequence = [node]
    # Built top-down: attaching a finished deep subtree would make pydicom recurse into it.
    for level in range(1, 1000):
        child = container(f"Level {level}", [])
        node.ContentSequence = [text("Note", f"level {level}"), child]
        node = child
    started = time.monotonic()
    doc = read_dicom_report(ds)
    assert time.monotonic() - started < 5
    lines = doc.findings.split("\n")
    assert lines[0] == "Note: level 1"
    assert MAX_DEPTH - 2 <= len(lines) < MAX_DEPTH
    assert f"content nested deeper than {MAX_DEPTH} levels was not read" in doc.warnings
    assert doc.original["truncated"] is True


def test_wide_tree_stops_at_the_item_limit() -> None:
    ds = sr_with([text("Note", str(n)) for n in range(MAX_ITEMS + 5)])
    doc = read_dicom_report(ds)
    assert len(doc.findings.split("\n")) == MAX_ITEMS
    assert any(warning.startswith(f"more than {MAX_ITEMS} content items")
               for warning in doc.warnings)
    assert len(doc.original["tree"]) == MAX_ITEMS


def test_original_tree_values_are_bounded() -> None:
    long_text = "肺" * 20_000
    doc = read_dicom_report(sr_with([text("Finding", long_text, concept=("121071", "DCM"))]))
    assert doc.findings == long_text  # the report text is whole
    assert len(doc.original["tree"][0]["value"]) < len(long_text)
    assert doc.original["truncated"] is True


# --- Encapsulated PDF --------------------------------------------------------------------


def test_pdf_with_chinese_text(tmp_path: Path) -> None:
    ds = make_pdf_report(accession="A9", study_uid="1.2.3.4", sop_uid="1.2.3.4.9")
    doc = via_file(ds, tmp_path)
    assert doc.source == "dicom-pdf"
    assert doc.title == "CT 胸部平扫报告"
    assert doc.findings == ("CT 胸部平扫报告\n检查所见：双肺纹理清晰，未见明确结节。\n"
                            "诊断意见：胸部CT平扫未见明显异常。")
    assert doc.has_pdf and doc.pdf_bytes is None
    assert (doc.status, doc.source_status) == ("final", "")
    assert (doc.report_key, doc.accession_number) == ("sop:1.2.3.4.9", "A9")
    assert doc.patient_name == "王小东"
    assert doc.issued_at == datetime(2024, 1, 5, 11, 30)
    assert doc.effective_at == datetime(2024, 1, 5, 10, 15)
    assert doc.original["mime"] == "application/pdf"
    assert doc.original["pdf_bytes"] == len(ds.EncapsulatedDocument)
    assert doc.warnings == ()


def test_pdf_with_predecessor_is_amended_and_names_its_people() -> None:
    ds = make_pdf_report(text="Findings: no focal lesion.", title="Chest CT")
    sop = Dataset()
    sop.ReferencedSOPClassUID = EncapsulatedPDFStorage
    sop.ReferencedSOPInstanceUID = "1.2.3.77"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.7"
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    ds.PredecessorDocumentsSequence = [study]
    verifier = Dataset()
    verifier.VerifyingObserverName = "Zhang^Wei=张^伟"
    verifier.VerificationDateTime = "20240105120000+0800"
    ds.VerifyingObserverSequence = [verifier]
    ds.VerificationFlag = "VERIFIED"
    doc = read_dicom_report(ds)
    assert (doc.status, doc.source_status) == ("amended", "VERIFIED")
    assert doc.predecessor_keys == ("sop:1.2.3.77",)
    assert doc.verifier == "张伟"
    assert doc.issued_at == datetime(2024, 1, 5, 12, 0, tzinfo=EAST_8)
    assert doc.findings == "Chest CT\nFindings: no focal lesion."


def test_pdf_title_falls_back_to_the_concept_name() -> None:
    ds = make_pdf_report(text="ok", title="")
    ds.ConceptNameCodeSequence = [code("18748-4", "LN", "Diagnostic imaging report")]
    assert read_dicom_report(ds).title == "Diagnostic imaging report"


def test_pdf_time_falls_back_to_acquisition_datetime() -> None:
    ds = make_pdf_report(text="ok")
    del ds.ContentDate, ds.ContentTime
    ds.AcquisitionDateTime = "20240107080000"
    assert read_dicom_report(ds).issued_at == datetime(2024, 1, 7, 8, 0)


@pytest.mark.parametrize("data", [b"%PDF-1.4\n\x00\xff garbage, no objects, no xref",
                                  b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>"])
def test_unreadable_pdf_text_is_a_warning_not_an_error(data: bytes) -> None:
    ds = make_pdf_report(text="ok")
    ds.EncapsulatedDocument = data + b"\x00" * (len(data) % 2)
    doc = read_dicom_report(ds)
    assert doc.has_pdf
    assert doc.findings == ""
    assert any(warning.startswith("EncapsulatedDocument: ") for warning in doc.warnings)


@pytest.mark.parametrize(("mutate", "field"), [
    (_drop("EncapsulatedDocument"), "EncapsulatedDocument"),
    (_set("EncapsulatedDocument", b""), "EncapsulatedDocument"),
    (_set("MIMETypeOfEncapsulatedDocument", "text/xml"), "MIMETypeOfEncapsulatedDocument"),
    (_drop("MIMETypeOfEncapsulatedDocument"), "MIMETypeOfEncapsulatedDocument"),
    (_set("EncapsulatedDocument", b"<html>report</html>\x00"), "EncapsulatedDocument"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_pdf_validation_errors_name_the_field(mutate: Callable[[Dataset], None],
                                              field: str) -> None:
    ds = make_pdf_report(text="ok")
    mutate(ds)
    with pytest.raises(ReportFormatError) as caught:
        read_dicom_report(ds)
    assert caught.value.field == field
