"""Builders of synthetic DICOM objects and DICOMweb request bodies for tests."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def make_ct(
    *,
    patient_id: str = "P0001",
    patient_name: str = "Wang^XiaoDong",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    size: int = 32,
    charset: str | None = "ISO_IR 192",
    **attrs: Any,
) -> Dataset:
    """A small CT image with random (not constant) pixels and a complete header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A" + secrets.token_hex(3)
    ds.StudyDescription = "CT CHEST"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0, 0, float(instance_number)]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(instance_number)
    ds.PixelData = rng.integers(0, 4000, (size, size), dtype=np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: Iterable[bytes], *, content_type: str = "application/dicom",
              boundary: str = "testboundary123") -> tuple[bytes, str]:
    body = b""
    for part in parts:
        body += (f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").encode()
        body += part + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """Parts of a multipart/related body as (part Content-Type, payload)."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip().strip('"')
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        part_type = ""
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-type:"):
                part_type = line.split(":", 1)[1].strip()
        parts.append((part_type, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts


# --- reports: DICOM SR and Encapsulated PDF ------------------------------------------------

_REPORT_DATETIME = (2024, 1, 5, 11, 30, 0)  # after make_ct's study (20240105 101500)


def make_text_sr(
    *,
    patient_id: str = "P0001",
    patient_name: str = "Wang^XiaoDong",
    study_uid: str | None = None,
    accession: str = "",
    findings: str = "双肺纹理清晰，未见明确结节及实变影。\n纵隔居中，未见肿大淋巴结。",
    impression: str = "胸部CT平扫未见明显异常。",
    title: str = "CT 胸部平扫报告",
    charset: str = "ISO_IR 192",
    verified: bool = True,
    complete: bool = True,
    predecessor_sop_uid: str | None = None,
    author: str = "李医生",
    verifier: str = "张主任",
    sop_uid: str | None = None,
    series_uid: str | None = None,
    content_datetime: Any = None,
) -> Dataset:
    """A Comprehensive SR diagnostic imaging report (TID 2000 shape) written by highdicom.

    Content: observer context (121005 Person, 121008 = ``author``), procedure reported
    (121058 = LN 24627-2 "CT Chest"), a Findings container (121070) holding one Finding text
    (121071) and a Conclusions container (121076) holding one Conclusion text (121077); a
    text that is "" is left out. The data set is returned as re-read from its Part 10 bytes
    (Explicit VR LE), so its text elements are still raw and decoded with ``charset`` like a
    received file. ``content_datetime`` (a ``datetime``, default 2024-01-05 11:30) is the
    ContentDate/Time and the VerificationDateTime.
    """
    import warnings
    from datetime import datetime

    import highdicom.sr as hsr
    from highdicom.sr.coding import CodedConcept
    from pydicom import dcmread
    from pydicom.uid import ComprehensiveSRStorage

    def code(value: str, scheme: str, meaning: str) -> CodedConcept:
        return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)

    def section(name: CodedConcept, item: CodedConcept, text: str) -> Any:
        container = hsr.ContainerContentItem(name=name, relationship_type="CONTAINS")
        if text:
            container.ContentSequence = hsr.ContentSequence(
                [hsr.TextContentItem(name=item, value=text, relationship_type="CONTAINS")])
        return container

    when = content_datetime or datetime(*_REPORT_DATETIME)
    evidence = make_ct(patient_id=patient_id, patient_name=patient_name, study_uid=study_uid,
                       charset=charset, AccessionNumber=accession, StudyID="1")
    previous = []
    if predecessor_sop_uid:
        prior = Dataset()
        prior.SOPClassUID = ComprehensiveSRStorage
        prior.SOPInstanceUID = predecessor_sop_uid
        prior.StudyInstanceUID = evidence.StudyInstanceUID
        prior.SeriesInstanceUID = series_uid or generate_uid()
        previous.append(prior)
    with warnings.catch_warnings():
        # highdicom warns on one-component names such as "李医生"; real Chinese PN often are.
        warnings.simplefilter("ignore", UserWarning)
        root = hsr.ContainerContentItem(name=code("18748-4", "LN", title), template_id="2000")
        root.ContentSequence = hsr.ContentSequence([
            hsr.CodeContentItem(name=code("121005", "DCM", "Observer Type"),
                                value=code("121006", "DCM", "Person"),
                                relationship_type="HAS OBS CONTEXT"),
            hsr.PnameContentItem(name=code("121008", "DCM", "Person Observer Name"),
                                 value=author, relationship_type="HAS OBS CONTEXT"),
            hsr.CodeContentItem(name=code("121058", "DCM", "Procedure reported"),
                                value=code("24627-2", "LN", "CT Chest"),
                                relationship_type="HAS CONCEPT MOD"),
            section(code("121070", "DCM", "Findings"), code("121071", "DCM", "Finding"),
                    findings),
            section(code("121076", "DCM", "Conclusions"), code("121077", "DCM", "Conclusion"),
                    impression),
        ])
        sr = hsr.ComprehensiveSR(
            evidence=[evidence], content=root, series_instance_uid=series_uid or generate_uid(),
            series_number=99, sop_instance_uid=sop_uid or generate_uid(), instance_number=1,
            manufacturer="cloudfilm tests", is_complete=complete, is_final=complete,
            is_verified=verified, verifying_observer_name=verifier if verified else None,
            verifying_organization="市第一人民医院放射科" if verified else None,
            previous_versions=previous or None,
        )
    sr.ContentDate = when.strftime("%Y%m%d")
    sr.ContentTime = when.strftime("%H%M%S")
    if verified:
        sr.VerifyingObserverSequence[0].VerificationDateTime = when.strftime("%Y%m%d%H%M%S")
    return dcmread(io.BytesIO(to_bytes(sr)))


def make_pdf_report(
    *,
    patient_id: str = "P0001",
    study_uid: str | None = None,
    accession: str = "",
    text: str = "检查所见：双肺纹理清晰，未见明确结节。\n诊断意见：胸部CT平扫未见明显异常。",
    title: str = "CT 胸部平扫报告",
    sop_uid: str | None = None,
) -> Dataset:
    """An Encapsulated PDF report whose PDF weasyprint renders from ``title`` and ``text``.

    Chinese is set in the Noto CJK fonts installed here. The PDF of a (title, text) pair is
    rendered once per test session (a CJK PDF takes seconds).
    """
    from pydicom.uid import EncapsulatedPDFStorage

    pdf = _render_pdf(title, text)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = patient_id
    ds.PatientName = "Wang^XiaoDong=王^小东"
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.Modality = "DOC"
    ds.SeriesNumber = 98
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.Manufacturer = "cloudfilm tests"
    ds.ContentDate = "20240105"
    ds.ContentTime = "113000"
    ds.AcquisitionDateTime = "20240105113000"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\x00" * (len(pdf) % 2)  # OB values have even length
    return ds


_PDFS: dict[tuple[str, str], bytes] = {}


def _render_pdf(title: str, text: str) -> bytes:
    import html

    import weasyprint

    if (title, text) in _PDFS:
        return _PDFS[title, text]

    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in text.split("\n"))
    page = (
        "<html><head><meta charset='utf-8'><style>body{font-family:'Noto Sans CJK SC',"
        f"sans-serif}}</style></head><body><h1>{html.escape(title)}</h1>{paragraphs}"
        "</body></html>"
    )
    pdf = _PDFS[title, text] = bytes(weasyprint.HTML(string=page).write_pdf())
    return pdf
