"""The demo's diagnostic reports as hospitals send them: DICOM SR and FHIR DiagnosticReport.

A DIMSE hospital's PACS sends its report as a Basic Text SR over C-STORE, in the exam's
study, in a series of its own (TID 2000 shape: observer context, procedure, one Finding
and one Impression TEXT item). A STOW-RS hospital's RIS POSTs a FHIR R4 DiagnosticReport
that names the study by its UID (``urn:dicom:uid``) and the accession number (``ACSN``).
Built with plain pydicom: highdicom is a test dependency only.

Everything is derived from the exam (UIDs, report identifiers, times), so a resend is the
very same report and the platform answers it as a duplicate.

References
----------
PS3.3 A.35.1 (Basic Text SR IOD), C.17.2 (SR Document General), C.17.3 (SR Document
Content); PS3.16 TID 2000, CID 7001; HL7 FHIR R4 DiagnosticReport.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, BasicTextSRStorage, ExplicitVRLittleEndian

from cloudfilm.demo.objects import SOP_CLASSES, set_patient
from cloudfilm.demo.province import Exam, ReportPlan, make_uid

__all__ = ["SR_SOP_CLASS", "display_name", "fhir_reports", "report_identifier",
           "report_title", "sr_datasets"]

SR_SOP_CLASS = str(BasicTextSRStorage)
"""The SOP class of the demo's SR reports."""

_CHINA = timezone(timedelta(hours=8))
_SR_SERIES_NUMBER = 900  # after the image series, as PACS number their report series
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_PROCEDURES = {"CT": "Computed Tomography", "MR": "Magnetic Resonance",
               "DX": "Digital Radiography", "US": "Ultrasound"}  # PS3.16 CID 29


def report_title(exam: Exam) -> str:
    """The report's title, e.g. ``胸部CT平扫报告`` (SR document title, FHIR ``code.text``)."""
    return f"{exam.description}报告"


def display_name(person_name: str) -> str:
    """A PN such as ``Li^Ming=李^明`` as one display name: ``李明`` (ideographic first)."""
    alphabetic, _, ideographic = person_name.partition("=")
    return (ideographic.split("=")[0] or alphabetic).replace("^", "")


def report_identifier(exam: Exam) -> tuple[str, str]:
    """(system, value) of the FHIR report identifier: the hospital RIS's report number."""
    return f"urn:oid:{make_uid(exam.hospital.code, 'ris-report')}", f"{exam.accession}-R"


# --- DICOM SR ------------------------------------------------------------------------------


def sr_datasets(exam: Exam) -> list[Dataset]:
    """The SR objects of an exam whose report travels as SR: the report, then its
    amendment (if any, naming the first as its predecessor); [] for other exams.

    Parameters
    ----------
    exam
        An exam of :func:`cloudfilm.demo.province.build_province`.

    Returns
    -------
    list of pydicom.dataset.Dataset
        Basic Text SR data sets (UTF-8, explicit VR little endian file meta), with the
        same patient and study attributes as the exam's images.
    """
    plan = exam.report
    if plan is None or plan.kind != "sr":
        return []
    out: list[Dataset] = []
    for number, version in enumerate(plan.versions, start=1):
        out.append(_sr(exam, version, number, out[-1] if out else None))
    return out


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(relationship: str, value_type: str, name: Dataset, **values: Any) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([name])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _dicom_text(text: str) -> str:
    return text.replace("\n", "\r\n")  # CR LF ends a line in DICOM text (PS3.5 6.1.3)


def _sr(exam: Exam, plan: ReportPlan, number: int, predecessor: Dataset | None) -> Dataset:
    hospital = exam.hospital
    sop_uid = make_uid(exam.study_uid, "report", number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SR_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SR_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = ds.ContentDate = plan.issued.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = plan.issued.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0800"
    # Patient and study exactly as the images carry them: one patient, one study.
    set_patient(ds, exam)
    ds.StudyInstanceUID = exam.study_uid
    ds.StudyDate = exam.performed.strftime("%Y%m%d")
    ds.StudyTime = exam.performed.strftime("%H%M%S")
    ds.AccessionNumber = exam.accession
    ds.ReferringPhysicianName = exam.referring
    ds.StudyID = str(exam.index)
    ds.StudyDescription = exam.description
    ds.Manufacturer = "Synthetic"
    ds.ManufacturerModelName = "DemoRIS"
    ds.InstitutionName = hospital.name
    ds.StationName = hospital.ae_title
    # SR Document Series: the report in a series of its own.
    ds.Modality = "SR"
    ds.SeriesInstanceUID = make_uid(exam.study_uid, "report-series")
    ds.SeriesNumber = _SR_SERIES_NUMBER
    ds.SeriesDescription = "诊断报告"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.InstanceNumber = number
    # SR Document General: complete and verified, i.e. final (amended with a predecessor).
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifying = Dataset()
    verifying.VerifyingObserverName = plan.verifier
    verifying.VerifyingObserverIdentificationCodeSequence = Sequence()
    verifying.VerifyingOrganization = f"{hospital.name}放射科"
    verifying.VerificationDateTime = plan.issued.strftime("%Y%m%d%H%M%S")
    ds.VerifyingObserverSequence = Sequence([verifying])
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_evidence(exam)])
    if predecessor is not None:
        ds.PredecessorDocumentsSequence = Sequence([_reference(predecessor)])
    # SR Document Content: the root container and its items.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", report_title(exam))])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContentSequence = Sequence([
        _item("HAS CONCEPT MOD", "CODE", _code("121049", "DCM", "Language of Content Item "
                                               "and Descendants"),
              ConceptCodeSequence=Sequence([_code("zh-CN", "RFC5646", "Chinese (China)")])),
        _item("HAS OBS CONTEXT", "CODE", _code("121005", "DCM", "Observer Type"),
              ConceptCodeSequence=Sequence([_code("121006", "DCM", "Person")])),
        _item("HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name"),
              PersonName=plan.author),
        _item("HAS CONCEPT MOD", "CODE", _code("121058", "DCM", "Procedure reported"),
              ConceptCodeSequence=Sequence([_code(exam.modality, "DCM",
                                                  _PROCEDURES[exam.modality])])),
        _item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"),
              TextValue=_dicom_text(plan.findings)),
        _item("CONTAINS", "TEXT", _code("121073", "DCM", "Impression"),
              TextValue=_dicom_text(plan.impression)),
    ])
    return ds


def _evidence(exam: Exam) -> Dataset:
    """The images the report was written on (Current Requested Procedure Evidence)."""
    sop_class = SOP_CLASSES[exam.modality]
    study = Dataset()
    study.StudyInstanceUID = exam.study_uid
    series_items = []
    for series in exam.series:
        item = Dataset()
        item.SeriesInstanceUID = series.uid
        refs = []
        for i in range(series.images):
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = make_uid(series.uid, i)  # as objects.py numbers them
            refs.append(ref)
        item.ReferencedSOPSequence = Sequence(refs)
        series_items.append(item)
    study.ReferencedSeriesSequence = Sequence(series_items)
    return study


def _reference(sr: Dataset) -> Dataset:
    """A Hierarchical SOP Instance Reference to an earlier SR (Predecessor Documents)."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = sr.SOPClassUID
    ref.ReferencedSOPInstanceUID = sr.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = sr.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([ref])
    study = Dataset()
    study.StudyInstanceUID = sr.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    return study


# --- FHIR ----------------------------------------------------------------------------------


def fhir_reports(exam: Exam) -> list[dict[str, Any]]:
    """The FHIR R4 DiagnosticReport resources of an exam whose report travels as FHIR: the
    report (``final``), then its amendment (``amended``, same identifier); [] otherwise.

    Parameters
    ----------
    exam
        An exam of :func:`cloudfilm.demo.province.build_province`.

    Returns
    -------
    list of dict
        JSON-ready resources; findings travel as a text/plain ``presentedForm``, the
        impression as ``conclusion``, times with the +08:00 offset.
    """
    plan = exam.report
    if plan is None or plan.kind != "fhir":
        return []
    return [_fhir(exam, version, "final" if number == 1 else "amended")
            for number, version in enumerate(plan.versions, start=1)]


def _fhir_time(at: datetime) -> str:
    return at.replace(microsecond=0, tzinfo=_CHINA).isoformat()


def _fhir(exam: Exam, plan: ReportPlan, status: str) -> dict[str, Any]:
    system, value = report_identifier(exam)
    return {
        "resourceType": "DiagnosticReport",
        "language": "zh-CN",
        "identifier": [
            {"system": system, "value": value},
            {"type": {"coding": [{"system": _V2_0203, "code": "ACSN"}]},
             "system": f"urn:oid:{make_uid(exam.hospital.code, 'accession')}",
             "value": exam.accession},
        ],
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                         "code": "RAD", "display": "Radiology"}]},
            {"coding": [{"system": _DCM, "code": exam.modality,
                         "display": _PROCEDURES[exam.modality]}]},
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4",
                             "display": "Diagnostic imaging study"}],
                 "text": report_title(exam)},
        "subject": {"identifier": {"value": exam.resident.local_patient_id(
            exam.hospital, exam.hospital_index)},
                    "display": exam.resident.family[0] + exam.resident.given[0]},
        "effectiveDateTime": _fhir_time(exam.performed),
        "issued": _fhir_time(plan.issued),
        "resultsInterpreter": [{"type": "Practitioner", "display": display_name(plan.author)}],
        "performer": [{"type": "Practitioner", "display": display_name(plan.verifier)}],
        "imagingStudy": [{"identifier": {"system": "urn:dicom:uid",
                                         "value": f"urn:oid:{exam.study_uid}"}}],
        "conclusion": plan.impression,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "language": "zh-CN",
                           "title": "检查所见",
                           "data": base64.b64encode(plan.findings.encode()).decode()}],
    }
