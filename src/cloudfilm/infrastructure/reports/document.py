"""The one shape every report format is read into, and the error that names a bad field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Source = Literal["fhir", "dicom-sr", "dicom-pdf", "hl7v2"]
Status = Literal["preliminary", "final", "amended", "cancelled"]
"""The platform's report states. Each reader maps its format's own status onto these and
keeps the original in :attr:`ReportDocument.source_status`:

- FHIR R4 ``DiagnosticReport.status``: registered/partial/preliminary -> preliminary;
  final -> final; amended/corrected/appended -> amended; cancelled/entered-in-error ->
  cancelled (``unknown`` is refused).
- DICOM SR: CompletionFlag COMPLETE and VerificationFlag VERIFIED -> final (amended when
  it has a Predecessor Documents Sequence); anything else -> preliminary.
- DICOM Encapsulated PDF: final (amended with a Predecessor Documents Sequence).
- HL7 v2 OBR-25: P/R/I/S -> preliminary; F -> final; C/A -> amended; X/D -> cancelled.
"""


class ReportFormatError(ValueError):
    """A report document is malformed; ``field`` names where (a FHIRPath-like path such as
    ``DiagnosticReport.status``, a DICOM keyword path such as
    ``ContentSequence[2].TextValue``, or an HL7 location such as ``OBR-25``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ReportDocument:
    """One version of one diagnostic report, as the sender described it.

    Text fields are plain text (no HTML), "" when absent. Times are timezone-aware when the
    source said the zone, naive (local time of the sender) when it did not.
    """

    source: Source
    report_key: str
    """Stable identity of the logical report *at the sending hospital*, shared by all its
    versions: FHIR ``identifier`` ("fhir:<system>|<value>", else "fhir-id:<id>"), DICOM
    "sop:<SOPInstanceUID>" of the first version, HL7 "hl7:<OBR-3 filler order number>"."""
    status: Status
    source_status: str
    """The status exactly as the format said it (``final``, ``VERIFIED/COMPLETE``, ``F``)."""
    study_instance_uid: str = ""
    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""
    title: str = ""
    """What was examined/reported, e.g. "CT 胸部平扫" (FHIR code, SR document title)."""
    modality: str = ""
    findings: str = ""
    """检查所见: what the radiologist saw."""
    impression: str = ""
    """诊断意见: the conclusion."""
    author: str = ""
    """报告医师: who wrote it (display name)."""
    verifier: str = ""
    """审核医师: the verifying radiologist (display name)."""
    effective_at: datetime | None = None
    """When the exam was done (FHIR effective[x], SR StudyDate/Time)."""
    issued_at: datetime | None = None
    """When this version was issued/verified."""
    sop_instance_uid: str = ""
    """For DICOM reports: this version's SOP Instance UID."""
    predecessor_keys: tuple[str, ...] = ()
    """Report keys of earlier versions this one amends (DICOM Predecessor Documents
    Sequence as "sop:<uid>"); empty for formats that reuse ``report_key``."""
    has_pdf: bool = False
    """The original is a PDF (DICOM Encapsulated PDF, FHIR presentedForm application/pdf)."""
    pdf_bytes: bytes | None = field(default=None, repr=False)
    """The PDF itself when the format carried it inline (FHIR presentedForm)."""
    language: str = ""
    warnings: tuple[str, ...] = ()
    """What was odd but not fatal (an unknown code, an undecodable attachment)."""
    original: dict[str, Any] = field(default_factory=dict, repr=False)
    """A JSON-able copy of what the sender sent (FHIR resource; SR content tree summary;
    HL7 segments), kept with the version for audit and re-reading."""
