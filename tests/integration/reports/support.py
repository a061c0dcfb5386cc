"""Builders of report messages for the report tests: FHIR R4 DiagnosticReport JSON and
HL7 v2 ORU^R01, as a hospital's RIS would send them."""

from __future__ import annotations

import base64
from typing import Any

FINDINGS = "双肺纹理清晰，右肺上叶见一直径约8mm磨玻璃结节，边界清楚。纵隔未见肿大淋巴结。"
IMPRESSION = "右肺上叶磨玻璃结节，建议3个月后复查。"


def fhir_report(*, key: str = "R-1", study_uid: str | None = None, accession: str = "",
                status: str = "final", findings: str = FINDINGS,
                impression: str = IMPRESSION, issued: str = "2024-01-05T12:30:00+08:00",
                effective: str = "2024-01-05T10:15:00+08:00", title: str = "CT 胸部平扫",
                author: str = "李医生", verifier: str = "张主任",
                pdf: bytes | None = None) -> dict[str, Any]:
    """A radiology DiagnosticReport naming its study by UID (imagingStudy identifier) and/or
    by the hospital's accession number; findings as a text/plain presentedForm."""
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.3", "value": key}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RAD"}]}],
        "code": {"text": title},
        "subject": {"identifier": {"value": "P0001"}, "display": "王小东"},
        "effectiveDateTime": effective,
        "issued": issued,
        "resultsInterpreter": [{"display": author}],
        "performer": [{"reference": "Practitioner/zhang", "display": verifier}],
        "conclusion": impression,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8",
                           "data": base64.b64encode(findings.encode()).decode()}],
    }
    if study_uid:
        resource["imagingStudy"] = [{"identifier": {"system": "urn:dicom:uid",
                                                    "value": f"urn:oid:{study_uid}"}}]
    if accession:
        resource["identifier"].append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "ACSN"}]},
            "system": "urn:oid:1.2.156.112604.1.2.4", "value": accession})
    if pdf is not None:
        resource["presentedForm"].append({"contentType": "application/pdf",
                                          "data": base64.b64encode(pdf).decode()})
    return resource


def oru_r01(*, order: str = "F-1", accession: str = "ACC-H1", study_uid: str = "",
            status: str = "F", findings: str = FINDINGS, impression: str = IMPRESSION,
            control_id: str = "MSG0001") -> str:
    """One ORU^R01 with one OBR group (findings and impression OBX lines)."""
    segments = [
        f"MSH|^~\\&|RIS|HA|CLOUDFILM|PROVINCE|20240105123000||ORU^R01|{control_id}|P|2.5"
        "|||||CHN|UNICODE UTF-8",
        "PID|1||P0001^^^HA||王^小东||19600102|M",
        f"OBR|1|P-1|{order}|CT001^CT 胸部平扫|||20240105101500|||||||||||{accession}||||"
        f"20240105123000||CT|{status}|||||||D001&李&医生|D002&张&主任",
        f"OBX|1|TX|59776-5^Procedure findings^LN||{findings}||||||{status}",
        f"OBX|2|TX|19005-8^Impression^LN||{impression}||||||{status}",
    ]
    if study_uid:
        segments.append(f"ZDS|{study_uid}^^Application^DICOM")
    return "\r".join(segments) + "\r"
