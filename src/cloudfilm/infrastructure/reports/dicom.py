"""Reading DICOM Structured Reports and Encapsulated PDF reports into :class:`ReportDocument`.

An SR is a tree of content items (PS3.3 C.17.3); hospitals fill it with every template
imaginable, so the reader does not insist on one: text under a Findings/Impression section
(by code or by an English or Chinese concept name) goes to ``findings``/``impression``, and
every other text item goes to ``findings`` prefixed with its concept name, so that nothing
the radiologist wrote is lost. Observation context (who observed, for which subject) is
metadata and is not copied into the report text.

Text values are decoded with the project's own decoder
(:func:`cloudfilm.infrastructure.dicom.charset.decode_text`) whenever pydicom has not yet
converted the element, so that GB18030 or UTF-8 mislabelled as ISO_IR 100 is recovered
(with a warning) instead of becoming mojibake; values pydicom already converted (with the
data set's Specific Character Set, inherited into sequence items) are used as they are.

References
----------
PS3.3 A.35 (SR IODs), C.17.2 (SR Document General), C.17.3 (SR Document Content),
A.45.1 and C.24.2 (Encapsulated PDF), PS3.5 6.2 (DA, TM, DT, PN), PS3.16 TID 2000.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime, time, tzinfo
from functools import lru_cache
from itertools import islice
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
)

from cloudfilm.infrastructure.dicom import dates
from cloudfilm.infrastructure.dicom.charset import decode_text, split_person_name
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError, Status

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_PDF_PAGES", "REPORT_SOP_CLASSES", "is_device_observed",
           "is_report",
           "read_dicom_report"]

# Only the narrative SR classes and the PDF carry a report a radiologist wrote. Left out on
# purpose: Key Object Selection (a list of flagged images), the dose reports (X-Ray,
# Radiopharmaceutical, Patient, Enhanced X-Ray Radiation Dose: written by the modality), the
# CAD SRs (Mammography, Chest, Colon: machine findings) and the measurement-only classes
# (Acquisition Context, Simplified Adult Echo, Procedure Log, Macular Grid, Planned/Performed
# Imaging Agent Administration): shown as a "report" they would pass machine output off as a
# diagnosis. Measurement reports (TID 1500) also travel as Enhanced/Comprehensive(3D) SR;
# the SOP class cannot tell them apart, so they are read, usually with little text.
_SR_SOP_CLASSES = frozenset({
    str(BasicTextSRStorage),
    str(EnhancedSRStorage),
    str(ComprehensiveSRStorage),
    str(Comprehensive3DSRStorage),
    str(ExtensibleSRStorage),
})
REPORT_SOP_CLASSES: frozenset[str] = _SR_SOP_CLASSES | {str(EncapsulatedPDFStorage)}
"""SOP Class UIDs whose instances are read as diagnostic reports."""

MAX_DEPTH = 50
"""Content items nested deeper than this are not read (a hostile file must not hang ingest)."""
MAX_ITEMS = 10_000
"""At most this many content items of one SR are read."""
MAX_PDF_PAGES = 50
"""Text is extracted from at most this many PDF pages."""

_ORIGINAL_VALUE_CHARS = 4_000  # per value in ``original``: a summary, the archive keeps the file
_ORIGINAL_BUDGET = 200_000  # all values of one ``original`` tree together

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_KNOWN_VALUE_TYPES = frozenset({
    "CONTAINER", "TEXT", "CODE", "NUM", "PNAME", "DATE", "TIME", "DATETIME", "UIDREF",
    "IMAGE", "COMPOSITE", "WAVEFORM", "SCOORD", "SCOORD3D", "TCOORD", "TABLE",
})  # fmt: skip

_PERSON_OBSERVER_NAME = ("DCM", "121008")
_PROCEDURE_REPORTED = ("DCM", "121058")
_LANGUAGE = ("DCM", "121049")
# Section codes of PS3.16 (TID 2000 and CID 7001) and their LOINC twins used in CDA imaging
# reports, and the names that templates from the field use without a code.
_FINDINGS_CODES = frozenset({
    ("DCM", "121070"), ("DCM", "121071"), ("LN", "18782-3"), ("LN", "59776-5"),
})  # fmt: skip
_IMPRESSION_CODES = frozenset({
    ("DCM", "121072"), ("DCM", "121073"), ("DCM", "121076"), ("DCM", "121077"),
    ("LN", "19005-8"), ("LN", "55110-1"),
})  # fmt: skip
_FINDINGS_NAMES = frozenset({"finding", "findings"})
_IMPRESSION_NAMES = frozenset({"impression", "impressions", "conclusion", "conclusions",
                               "summary"})
_FINDINGS_ZH = ("所见",)  # 检查所见, 影像所见
_IMPRESSION_ZH = ("诊断", "印象", "结论", "意见")  # 诊断意见, 影像诊断, 印象

_MODALITY_CODES = frozenset({
    "CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "IO", "PX", "ES", "OP", "OCT",
})  # fmt: skip
_MODALITY_WORDS_RE = re.compile(
    r"(?<![A-Za-z])(CTA|CT|MRI|MRA|MR|PET|US|CR|DR|DX|MG|NM|XA|RF)(?![A-Za-z])"
)
_MODALITY_ALIASES = {"CTA": "CT", "MRI": "MR", "MRA": "MR", "PET": "PT", "DR": "DX"}
_MODALITY_ZH = (("磁共振", "MR"), ("核磁", "MR"), ("超声", "US"), ("彩超", "US"), ("钼靶", "MG"))

_BLANK_LINES_RE = re.compile(r"\n{3,}")

_Charset = tuple[str, ...]


def is_report(sop_class_uid: str) -> bool:
    """Return whether instances of ``sop_class_uid`` are diagnostic reports.

    Parameters
    ----------
    sop_class_uid : str
        A SOP Class UID as stored (trailing NUL or space padding is ignored).

    Returns
    -------
    bool
        True for the narrative SR classes and Encapsulated PDF (:data:`REPORT_SOP_CLASSES`).
    """
    return str(sop_class_uid).strip("\x00 ") in REPORT_SOP_CLASSES


def is_device_observed(ds: Dataset) -> bool:
    """Return whether an SR's observation context names only a *device* observer (TID 1002:
    Observer Type (DCM 121005) = Device (DCM 121007), no Person): a machine's output such
    as an AI result or a CAD report, which the archive keeps as an object of the study but
    never records as a doctor's report.
    """
    types: set[str] = set()
    for item in ds.get("ContentSequence", [])[:64]:
        name = item.get("ConceptNameCodeSequence")
        value = item.get("ConceptCodeSequence")
        if name and value and str(name[0].get("CodeValue", "")) == "121005":
            types.add(str(value[0].get("CodeValue", "")))
    return types == {"121007"}


def read_dicom_report(ds: Dataset) -> ReportDocument:
    """Read an SR or Encapsulated PDF data set into a :class:`ReportDocument`.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The whole data set (for PDF including EncapsulatedDocument), e.g. from
        :func:`cloudfilm.infrastructure.dicom.part10.read_header`.

    Returns
    -------
    ReportDocument
        ``source`` "dicom-sr" or "dicom-pdf", ``report_key`` "sop:<SOPInstanceUID>"; odd but
        harmless content (unknown value types, undecodable text, PDF text extraction
        failures, limits reached) is listed in ``warnings``.

    Raises
    ------
    ReportFormatError
        Not a report SOP class, no SOP Instance UID, an SR without content or with a
        malformed content item, an Encapsulated PDF without a PDF. ``field`` names the
        element, e.g. ``ContentSequence[3].ContentSequence[0].TextValue``.
    """
    warnings: list[str] = []
    charset = _charset_of(ds, ())
    sop_class = _value(ds, "SOPClassUID", charset, warnings) or ""
    if not is_report(sop_class):
        raise ReportFormatError("SOPClassUID", f"{sop_class[:64]!r} is not a report SOP class")
    header = _read_header(ds, charset, warnings)
    if sop_class.strip("\x00 ") == str(EncapsulatedPDFStorage):
        return _read_pdf(ds, sop_class, header, charset, warnings)
    return _read_sr(ds, sop_class, header, charset, warnings)


# --- header attributes common to SR and PDF -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    sop_instance_uid: str
    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    predecessor_keys: tuple[str, ...]
    author: str
    verifier: str
    verified_at: datetime | None
    effective_at: datetime | None
    content_at: datetime | None
    zone: tzinfo | None


def _read_header(ds: Dataset, charset: _Charset, warnings: list[str]) -> _Header:
    uid = _value(ds, "SOPInstanceUID", charset, warnings)
    if not uid:
        raise ReportFormatError("SOPInstanceUID", "missing: the report cannot be identified")
    zone = _zone(_value(ds, "TimezoneOffsetFromUTC", charset, warnings) or "",
                 "TimezoneOffsetFromUTC", warnings)
    verifiers = _items(ds, "VerifyingObserverSequence", warnings)
    verifier = ""
    verified_at = None
    if verifiers:
        first = _charset_of(verifiers[0], charset)
        verifier = _display_name(
            _value(verifiers[0], "VerifyingObserverName", first, warnings) or "")
        # With several verifying observers the version is issued at the last verification.
        last = verifiers[-1]
        raw = _value(last, "VerificationDateTime", _charset_of(last, charset), warnings)
        verified_at = _parse_dt(raw or "", zone, "VerificationDateTime", warnings)
    return _Header(
        sop_instance_uid=uid,
        study_instance_uid=_value(ds, "StudyInstanceUID", charset, warnings) or "",
        accession_number=_accession(ds, charset, warnings),
        patient_id=_value(ds, "PatientID", charset, warnings) or "",
        patient_name=_display_name(_value(ds, "PatientName", charset, warnings) or ""),
        predecessor_keys=_predecessors(ds, charset, warnings),
        author=_author_observer(ds, charset, warnings),
        verifier=verifier,
        verified_at=verified_at,
        effective_at=_date_time(ds, "StudyDate", "StudyTime", zone, charset, warnings),
        content_at=_date_time(ds, "ContentDate", "ContentTime", zone, charset, warnings),
        zone=zone,
    )


def _accession(ds: Dataset, charset: _Charset, warnings: list[str]) -> str:
    accession = _value(ds, "AccessionNumber", charset, warnings)
    if accession:
        return accession
    # An SR covering one request names it in the Referenced Request Sequence (PS3.3 C.17.2).
    for request in _items(ds, "ReferencedRequestSequence", warnings)[:1]:
        return _value(request, "AccessionNumber", _charset_of(request, charset), warnings) or ""
    return ""


def _predecessors(ds: Dataset, charset: _Charset, warnings: list[str]) -> tuple[str, ...]:
    keys: dict[str, None] = {}
    for study in _items(ds, "PredecessorDocumentsSequence", warnings):
        for series in _items(study, "ReferencedSeriesSequence", warnings):
            for sop in _items(series, "ReferencedSOPSequence", warnings):
                uid = _value(sop, "ReferencedSOPInstanceUID", charset, warnings)
                if uid:
                    keys.setdefault(f"sop:{uid}", None)
    return tuple(keys)


def _author_observer(ds: Dataset, charset: _Charset, warnings: list[str]) -> str:
    for observer in _items(ds, "AuthorObserverSequence", warnings):
        name = _display_name(
            _value(observer, "PersonName", _charset_of(observer, charset), warnings) or "")
        if name:
            return name
    return ""


# --- SR -----------------------------------------------------------------------------------


def _read_sr(
    ds: Dataset, sop_class: str, header: _Header, charset: _Charset, warnings: list[str]
) -> ReportDocument:
    value_type = (_value(ds, "ValueType", charset, warnings) or "").upper()
    if not value_type:
        raise ReportFormatError("ValueType", "the document root has no ValueType")
    if value_type != "CONTAINER":
        raise ReportFormatError("ValueType", "the document root must be a CONTAINER")
    if not _items(ds, "ConceptNameCodeSequence", warnings):
        raise ReportFormatError("ConceptNameCodeSequence",
                                "the document root has no concept name (document title)")
    if "ContentSequence" not in ds:
        raise ReportFormatError("ContentSequence", "missing: the SR has no content")
    content = _items(ds, "ContentSequence", warnings)
    if not content:
        raise ReportFormatError("ContentSequence", "empty: the SR has no content")
    _, title = _concept(ds, "ConceptNameCodeSequence", charset, warnings)
    if not title:
        warnings.append("ConceptNameCodeSequence[0].CodeMeaning: the document title is empty")

    walk = _Walk(warnings)
    tree = walk.items(content, "ContentSequence", charset, depth=1, section=None,
                      in_context=False)
    findings = "\n".join(walk.findings)
    impression = "\n".join(walk.impression)
    if not findings and not impression:
        warnings.append("the SR content tree holds no text")

    status, source_status = _sr_status(ds, bool(header.predecessor_keys), charset, warnings)
    original: dict[str, Any] = {"sop_class": sop_class, "title": title, "tree": tree}
    if walk.truncated:
        original["truncated"] = True
    return ReportDocument(
        source="dicom-sr",
        report_key=f"sop:{header.sop_instance_uid}",
        status=status,
        source_status=source_status,
        study_instance_uid=header.study_instance_uid,
        accession_number=header.accession_number,
        patient_id=header.patient_id,
        patient_name=header.patient_name,
        title=title,
        modality=walk.modality,
        findings=findings,
        impression=impression,
        author=header.author or walk.author,
        verifier=header.verifier,
        effective_at=header.effective_at,
        issued_at=header.verified_at or header.content_at,
        sop_instance_uid=header.sop_instance_uid,
        predecessor_keys=header.predecessor_keys,
        language=walk.language,
        warnings=_unique(warnings),
        original=original,
    )


def _sr_status(
    ds: Dataset, amends: bool, charset: _Charset, warnings: list[str]
) -> tuple[Status, str]:
    """The platform status and "<CompletionFlag>/<VerificationFlag>" (see document.py)."""
    completion = (_value(ds, "CompletionFlag", charset, warnings) or "").upper()
    verification = (_value(ds, "VerificationFlag", charset, warnings) or "").upper()
    for keyword, flag in (("CompletionFlag", completion), ("VerificationFlag", verification)):
        if not flag:
            warnings.append(f"{keyword}: missing; the report is read as preliminary")
    status: Status = "preliminary"
    if completion == "COMPLETE" and verification == "VERIFIED":
        status = "amended" if amends else "final"
    return status, f"{completion}/{verification}"


@dataclass
class _Walk:
    """One pass over an SR content tree: text by section, observers, a JSON summary."""

    warnings: list[str]
    findings: list[str] = field(default_factory=list)
    impression: list[str] = field(default_factory=list)
    author: str = ""
    modality: str = ""
    language: str = ""
    count: int = 0
    budget: int = _ORIGINAL_BUDGET
    truncated: bool = False
    _too_many: bool = False
    _too_deep: bool = False

    def items(
        self,
        items: list[Dataset],
        path: str,
        charset: _Charset,
        *,
        depth: int,
        section: str | None,
        in_context: bool,
    ) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if self.count >= MAX_ITEMS:
                if not self._too_many:
                    self._too_many = self.truncated = True
                    self.warnings.append(f"more than {MAX_ITEMS} content items; the rest "
                                         "was not read")
                break
            self.count += 1
            nodes.append(self._item(item, f"{path}[{index}]", charset, depth, section,
                                    in_context))
        return nodes

    def _item(
        self,
        item: Dataset,
        path: str,
        parent_charset: _Charset,
        depth: int,
        section: str | None,
        in_context: bool,
    ) -> dict[str, Any]:
        charset = _charset_of(item, parent_charset)
        warnings = self.warnings
        value_type = (_value(item, "ValueType", charset, warnings) or "").upper()
        relationship = (_value(item, "RelationshipType", charset, warnings) or "").upper()
        if not value_type:
            if "ReferencedContentItemIdentifier" in item:
                # A by-reference relationship (Referenced Content Item Identifier, PS3.3
                # C.17.3) legitimately has no ValueType.
                target = _value(item, "ReferencedContentItemIdentifier", charset, warnings)
                return self._node("REFERENCE", relationship, "", target or "", [])
            raise ReportFormatError(f"{path}.ValueType", "content item has no ValueType")
        if value_type not in _KNOWN_VALUE_TYPES:
            warnings.append(f"{path}.ValueType: unknown value type {value_type[:16]!r}")
        code, name = _concept(item, "ConceptNameCodeSequence", charset, warnings)
        value = self._value_of(item, value_type, path, charset)
        in_context = in_context or relationship == "HAS OBS CONTEXT"
        own_section = _section_of(code, name)
        current = own_section or section
        self._note_metadata(item, value_type, code, value, charset)
        if not in_context:
            self._emit(value_type, name, value, current, own_section is not None)

        children: list[dict[str, Any]] = []
        child_items = _items(item, "ContentSequence", warnings)
        if child_items and depth >= MAX_DEPTH:
            if not self._too_deep:
                self._too_deep = self.truncated = True
                warnings.append(f"content nested deeper than {MAX_DEPTH} levels was not read")
        elif child_items:
            children = self.items(child_items, f"{path}.ContentSequence", charset,
                                  depth=depth + 1, section=current, in_context=in_context)
        return self._node(value_type, relationship, name, value, children)

    def _value_of(self, item: Dataset, value_type: str, path: str, charset: _Charset) -> str:
        warnings = self.warnings
        if value_type == "TEXT":
            if "TextValue" not in item:
                raise ReportFormatError(f"{path}.TextValue", "TEXT content item has no TextValue")
            return _value(item, "TextValue", charset, warnings) or ""
        if value_type == "CODE":
            return _concept(item, "ConceptCodeSequence", charset, warnings)[1]
        if value_type == "NUM":
            return _measurement(item, charset, warnings)
        if value_type == "PNAME":
            return _value(item, "PersonName", charset, warnings) or ""
        if value_type in ("IMAGE", "COMPOSITE", "WAVEFORM"):
            refs = _items(item, "ReferencedSOPSequence", warnings)
            return (_value(refs[0], "ReferencedSOPInstanceUID", charset, warnings) or ""
                    if refs else "")
        keyword = {"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime", "UIDREF": "UID",
                   "SCOORD": "GraphicType", "SCOORD3D": "GraphicType",
                   "TCOORD": "TemporalRangeType"}.get(value_type)
        return (_value(item, keyword, charset, warnings) or "") if keyword else ""

    def _note_metadata(
        self, item: Dataset, value_type: str, code: tuple[str, str], value: str,
        charset: _Charset,
    ) -> None:
        if value_type == "PNAME" and code == _PERSON_OBSERVER_NAME and not self.author:
            self.author = _display_name(value)
        elif value_type == "CODE" and code == _PROCEDURE_REPORTED and not self.modality:
            self.modality = _modality_of(item, charset, self.warnings)
        elif value_type == "CODE" and code == _LANGUAGE and not self.language:
            self.language = _concept_code(item, "ConceptCodeSequence", charset, self.warnings)

    def _emit(
        self, value_type: str, name: str, value: str, section: str | None, named: bool
    ) -> None:
        # Coded and numeric items are report text only inside a findings/impression section;
        # outside they are structure (procedure codes, languages, measurements of CAD).
        if value_type not in ("TEXT", "CODE", "NUM") or (value_type != "TEXT" and not section):
            return
        text = _tidy(value)
        if not text:
            return
        if name and not named:
            text = f"{name}: {text}"
        (self.impression if section == "impression" else self.findings).append(text)

    def _node(
        self, value_type: str, relationship: str, name: str, value: str,
        children: list[dict[str, Any]],
    ) -> dict[str, Any]:
        kept = value[:min(_ORIGINAL_VALUE_CHARS, self.budget)]
        self.budget -= len(kept)
        if len(kept) < len(value):
            self.truncated = True
        return {"type": value_type, "relationship": relationship, "name": name, "value": kept,
                "children": children}


def _concept(
    item: Dataset, keyword: str, charset: _Charset, warnings: list[str]
) -> tuple[tuple[str, str], str]:
    """Return ((scheme, code value), code meaning) of the first item of a code sequence."""
    codes = _items(item, keyword, warnings)
    if not codes:
        return ("", ""), ""
    code = codes[0]
    cs = _charset_of(code, charset)
    value = _concept_code(item, keyword, charset, warnings)
    scheme = (_value(code, "CodingSchemeDesignator", cs, warnings) or "").upper()
    return (scheme, value), _value(code, "CodeMeaning", cs, warnings) or ""


def _concept_code(item: Dataset, keyword: str, charset: _Charset, warnings: list[str]) -> str:
    codes = _items(item, keyword, warnings)
    if not codes:
        return ""
    cs = _charset_of(codes[0], charset)
    for code_keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        value = _value(codes[0], code_keyword, cs, warnings)
        if value:
            return value
    return ""


def _section_of(code: tuple[str, str], name: str) -> str | None:
    if code in _FINDINGS_CODES:
        return "findings"
    if code in _IMPRESSION_CODES:
        return "impression"
    key = name.strip().rstrip(":：").strip().lower()
    if key in _FINDINGS_NAMES or any(word in key for word in _FINDINGS_ZH):
        return "findings"
    if key in _IMPRESSION_NAMES or any(word in key for word in _IMPRESSION_ZH):
        return "impression"
    return None


def _measurement(item: Dataset, charset: _Charset, warnings: list[str]) -> str:
    measured = _items(item, "MeasuredValueSequence", warnings)
    if not measured:
        return ""
    cs = _charset_of(measured[0], charset)
    number = _value(measured[0], "NumericValue", cs, warnings) or ""
    units = _items(measured[0], "MeasurementUnitsCodeSequence", warnings)
    unit = ""
    if units:
        ucs = _charset_of(units[0], cs)
        scheme = (_value(units[0], "CodingSchemeDesignator", ucs, warnings) or "").upper()
        code = _value(units[0], "CodeValue", ucs, warnings) or ""
        # UCUM codes ("mm", "cm2") read better than their meanings; "1" means no unit.
        if scheme == "UCUM" and code:
            unit = "" if code == "1" else code
        else:
            unit = _value(units[0], "CodeMeaning", ucs, warnings) or ""
    return f"{number} {unit}".strip() if number else ""


def _modality_of(item: Dataset, charset: _Charset, warnings: list[str]) -> str:
    (scheme, value), meaning = _concept(item, "ConceptCodeSequence", charset, warnings)
    if scheme == "DCM" and value.upper() in _MODALITY_CODES:
        return value.upper()
    match = _MODALITY_WORDS_RE.search(meaning)
    if match:
        return _MODALITY_ALIASES.get(match.group(1), match.group(1))
    return next((modality for word, modality in _MODALITY_ZH if word in meaning), "")


# --- Encapsulated PDF ---------------------------------------------------------------------


def _read_pdf(
    ds: Dataset, sop_class: str, header: _Header, charset: _Charset, warnings: list[str]
) -> ReportDocument:
    data = _binary(ds, "EncapsulatedDocument", warnings)
    if not data:
        raise ReportFormatError("EncapsulatedDocument", "missing or empty: no PDF to read")
    mime = (_value(ds, "MIMETypeOfEncapsulatedDocument", charset, warnings) or "")
    if mime.split(";", 1)[0].strip().lower() != "application/pdf":
        raise ReportFormatError("MIMETypeOfEncapsulatedDocument",
                                f"{mime[:64]!r} is not application/pdf")
    if not data.startswith(b"%PDF"):
        raise ReportFormatError("EncapsulatedDocument", "the bytes are not a PDF (no %PDF)")
    text, pages = _pdf_text(data, warnings)
    title = (_value(ds, "DocumentTitle", charset, warnings)
             or _concept(ds, "ConceptNameCodeSequence", charset, warnings)[1]
             or "PDF report")
    issued_at = header.content_at or _parse_dt(
        _value(ds, "AcquisitionDateTime", charset, warnings) or "", header.zone,
        "AcquisitionDateTime", warnings)
    original: dict[str, Any] = {"sop_class": sop_class, "mime": mime, "pdf_bytes": len(data)}
    if pages is not None:
        original["pages"] = pages
    return ReportDocument(
        source="dicom-pdf",
        report_key=f"sop:{header.sop_instance_uid}",
        status="amended" if header.predecessor_keys else "final",
        # The PDF IOD has no Completion Flag; Verification Flag is optional (C.24.2).
        source_status=(_value(ds, "VerificationFlag", charset, warnings) or "").upper(),
        study_instance_uid=header.study_instance_uid,
        accession_number=header.accession_number,
        patient_id=header.patient_id,
        patient_name=header.patient_name,
        title=title,
        findings=text,
        author=header.author,
        verifier=header.verifier,
        effective_at=header.effective_at,
        issued_at=header.verified_at or issued_at,
        sop_instance_uid=header.sop_instance_uid,
        predecessor_keys=header.predecessor_keys,
        # The archive keeps the DICOM object; copying the PDF would double the storage.
        has_pdf=True,
        pdf_bytes=None,
        warnings=_unique(warnings),
        original=original,
    )


#: Seconds PDF text extraction may take. pypdf is pure Python and a crafted page (a huge
#: content stream, a decompression bomb) can keep it busy for minutes; a thread cannot be
#: stopped, so extraction runs in a child process that is killed at the limit.
PDF_TEXT_SECONDS = 10.0


def _pdf_text(data: bytes, warnings: list[str],
              timeout: float | None = None) -> tuple[str, int | None]:
    """Return the text of the first pages and the page count; never raises."""
    limit = PDF_TEXT_SECONDS if timeout is None else timeout
    context = _pdf_context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_pdf_text_child, args=(data, sender),
                            name="cloudfilm-pdf-text")
    try:
        child.start()
    except OSError as exc:
        warnings.append(f"EncapsulatedDocument: PDF text not extracted ({type(exc).__name__})")
        return "", None
    finally:
        sender.close()
    try:
        if receiver.poll(limit):
            text, count, notes = receiver.recv()
            warnings.extend(notes)
            return text, count
        warnings.append(f"EncapsulatedDocument: PDF text not extracted (took longer than "
                        f"{limit:g} s)")
        return "", None
    except (EOFError, OSError):  # the child died (memory limit, crash)
        warnings.append("EncapsulatedDocument: PDF text not extracted (extractor failed)")
        return "", None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(5)


@lru_cache(maxsize=1)
def _pdf_context() -> Any:
    import multiprocessing

    # forkserver: never fork the threaded server itself; the fork server preloads pypdf
    # so that each extraction starts in a few ms.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pypdf", __name__])
    return context


def _pdf_text_child(data: bytes, sender: Any) -> None:
    notes: list[str] = []
    text, count = _pdf_text_here(data, notes)
    sender.send((text, count, notes))
    sender.close()


def _pdf_text_here(data: bytes, warnings: list[str]) -> tuple[str, int | None]:
    from pypdf import PdfReader  # imported on first PDF: most ingests never need it

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Report PDFs are often "encrypted" with an empty user password (print rights).
            reader.decrypt("")
        pages = reader.pages
        count = len(pages)
    except Exception as exc:  # pypdf raises many types on broken files; text is optional
        warnings.append(f"EncapsulatedDocument: PDF text not extracted ({type(exc).__name__})")
        return "", None
    texts: list[str] = []
    for number, page in enumerate(islice(pages, MAX_PDF_PAGES), start=1):
        try:
            texts.append(page.extract_text() or "")
        except Exception as exc:  # one bad page must not lose the others
            warnings.append(f"EncapsulatedDocument: text of PDF page {number} not extracted "
                            f"({type(exc).__name__})")
    if count > MAX_PDF_PAGES:
        warnings.append(f"EncapsulatedDocument: text taken from the first {MAX_PDF_PAGES} of "
                        f"{count} PDF pages")
    return _tidy("\n".join(texts)), count


# --- element access -----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _vr(keyword: str) -> str:
    return str(dictionary_VR(keyword))


def _value(item: Dataset, keyword: str, charset: _Charset, warnings: list[str]) -> str | None:
    """Return an element's value as text ("" when empty), None when absent."""
    elem = item.get_item(keyword)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes | bytearray) and _vr(keyword) in _TEXT_VRS:
        # Still raw: pydicom has not converted it, so the project's decoder can recover
        # mislabelled GB18030/UTF-8 text instead of producing mojibake.
        vr = _vr(keyword)
        text, notes = decode_text(bytes(value), charset, vr="PN" if vr == "PN" else None)
        warnings.extend(f"{keyword}: {note}" for note in notes)
        return _clean(text)
    if isinstance(value, bytes | bytearray):
        try:  # numbers (UL, US, FL...) and ASCII VRs: pydicom's conversion is right for them
            value = item[keyword].value
        except Exception as exc:  # pydicom raises many types converting a malformed element
            warnings.append(f"{keyword}: unreadable ({type(exc).__name__})")
            return ""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return _clean("\\".join(str(v) for v in value))
    return _clean(str(value))


def _binary(item: Dataset, keyword: str, warnings: list[str]) -> bytes:
    try:
        value = item.get(keyword)
    except Exception as exc:  # a malformed raw element pydicom cannot convert
        warnings.append(f"{keyword}: unreadable ({type(exc).__name__})")
        return b""
    return bytes(value) if isinstance(value, bytes | bytearray) else b""


def _items(item: Dataset, keyword: str, warnings: list[str]) -> list[Dataset]:
    """Return the items of a sequence element; [] when absent, empty or not a sequence."""
    try:
        value = item.get(keyword)
    except Exception as exc:  # pydicom raises many types converting a malformed raw element
        warnings.append(f"{keyword}: unreadable sequence ({type(exc).__name__})")
        return []
    if not isinstance(value, Sequence):
        return []
    return [entry for entry in value if isinstance(entry, Dataset)]


def _charset_of(item: Dataset, inherited: _Charset) -> _Charset:
    # Items inherit the data set's Specific Character Set unless they declare their own
    # (PS3.3 C.12.1.1.2).
    elem = item.get_item("SpecificCharacterSet")
    if elem is None or elem.value in (None, b"", ""):
        return inherited
    value = elem.value
    if isinstance(value, bytes | bytearray):
        return tuple(bytes(value).decode("ascii", errors="replace").strip("\x00 ").split("\\"))
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _clean(text: str) -> str:
    # CR LF ends a line in DICOM text; bare CR and reversed LF CR occur in the field too.
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\n\r", "\n")
    return text.replace("\r", "\n").rstrip()


def _tidy(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no outer blanks."""
    lines = "\n".join(line.rstrip() for line in _clean(text).split("\n"))
    return _BLANK_LINES_RE.sub("\n\n", lines).strip()


def _display_name(value: str) -> str:
    """A PN value as one display name: the ideographic group if any, else alphabetic."""
    name = split_person_name(value.split("\\", 1)[0])
    if name.ideographic.components():
        return "".join(name.ideographic.components())  # 王^小东 -> 王小东
    for group in (name.alphabetic, name.phonetic):
        if group.components():
            return " ".join(group.components())
    return ""


def _unique(warnings: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(warnings))


# --- DA, TM, DT (PS3.5 6.2) ---------------------------------------------------------------


def _zone(value: str, keyword: str, warnings: list[str]) -> tzinfo | None:
    """Parse a UTC offset "+HHMM"/"-HHMM" (Timezone Offset From UTC, DT suffix)."""
    if not value:
        return None
    zone = dates.parse_offset(value)
    if zone is None:
        warnings.append(f"{keyword}: not a valid UTC offset; read as local time")
    return zone


def _date_time(
    ds: Dataset, date_keyword: str, time_keyword: str, zone: tzinfo | None, charset: _Charset,
    warnings: list[str],
) -> datetime | None:
    raw_date = _value(ds, date_keyword, charset, warnings) or ""
    if not raw_date:
        return None
    day = dates.parse_da(raw_date)
    if day is None:
        warnings.append(f"{date_keyword}: not a valid DICOM date")
        return None
    raw_time = _value(ds, time_keyword, charset, warnings) or ""
    moment = dates.parse_tm(raw_time) if raw_time else None
    if raw_time and moment is None:
        warnings.append(f"{time_keyword}: not a valid DICOM time; midnight assumed")
    # A date without time is kept as the start of that day rather than lost.
    return datetime.combine(day, moment or time(), tzinfo=zone)


def _parse_dt(
    value: str, zone: tzinfo | None, keyword: str, warnings: list[str]
) -> datetime | None:
    """Parse a DT value; its own offset wins over Timezone Offset From UTC (PS3.3 C.12.1)."""
    if not value:
        return None
    text = value.strip()
    if len(text) > 5 and text[-5] in "+-" and dates.parse_offset(text[-5:]) is None:
        warnings.append(f"{keyword}: not a valid UTC offset; read as local time")
        text, zone = text[:-5], None
    moment = dates.parse_dt(text, zone)
    if moment is None:
        warnings.append(f"{keyword}: not a valid DICOM date-time")
    return moment
