"""HL7 v2 ORU^R01 -> ReportDocument, and the ACK^R01 answer."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from cloudfilm.infrastructure.reports.document import ReportFormatError
from cloudfilm.infrastructure.reports.hl7v2 import ack, read_oru_r01

CST = timezone(timedelta(hours=8))
STUDY_UID = "1.2.840.113619.2.55.3.604688119.969.1709600000.123"
FINDINGS = "双肺纹理清晰，右肺上叶见一直径约8mm结节"
IMPRESSION = "右肺上叶结节，建议随访"


def segment(name: str, fields: dict[int, str]) -> str:
    """An ER7 segment from {field number: value}, so long OBRs stay countable."""
    return "|".join([name] + [fields.get(n, "") for n in range(1, max(fields) + 1)])


MSH = (
    "MSH|^~\\&|RIS|市第一人民医院|CLOUDFILM|区域影像云|20240305112000+0800||ORU^R01^ORU_R01|"
    "MSG20240305-0001|P|2.5|||AL|NE|CHN|{charset}|zh^Chinese^ISO639"
)
PID = "PID|1||0012345678^^^HOSP^MR~110101199001011234^^^CHN^NNCHN||王^小东||19900101|M"
OBR_CT = segment(
    "OBR",
    {
        1: "1",
        2: "ORD001",
        3: "F20240305001^RIS",
        4: "CT0101^CT 胸部平扫^L",
        7: "20240305102030+0800",
        18: "CT20240305001",
        22: "20240305110200+0800",
        24: "CT",
        25: "F",
        32: "1001&李&明",
        33: "2002&张&伟",
    },
)
OBR_MR = segment(
    "OBR",
    {
        1: "2",
        2: "ORD002",
        3: "F20240305002",
        4: "MR0201^MR 头颅平扫",
        7: "20240305",
        22: "202403051430",
        24: "MR",
        25: "P",
        32: "3003&Smith&John",
    },
)
# Two OBR groups: a Chinese CT report (ZDS, LOINC-coded OBX) and an MR report (study UID
# in an OBX, the &GDT/&IMP suffix convention, escapes).
TWO_REPORTS = [
    MSH,
    PID,
    "PV1|1|O|CT^^^RAD",
    "ORC|RE|ORD001|F20240305001",
    OBR_CT,
    f"ZDS|{STUDY_UID}^RIS^Application^DICOM",
    "OBX|1|TX|59776-5^检查所见^LN||双肺纹理清晰，\\.br\\右肺上叶见一直径约8mm结节||||||F",
    f"OBX|2|TX|19005-8^诊断意见^LN||{IMPRESSION}||||||F",
    "ORC|RE|ORD002|F20240305002",
    OBR_MR,
    "OBX|1|RP|113014^Study Instance UID^DCM||1.2.3.4^RIS^Application^DICOM||||||F",
    "OBX|2|FT|71020&GDT^^L||T2 \\T\\ FLAIR\\.br\\A\\F\\B \\S\\ C \\R\\ D \\E\\ E~second||||||F",
    "OBX|3|TX|71020&GDT||no acute infarct||||||F",
    "OBX|4|TX|71020&IMP||Normal MRI.||||||F",
    "OBX|5|TX|71020&IMP||withdrawn text||||||W",
]


def message(lines: list[str], charset: str = "UNICODE UTF-8", end: str = "\r") -> str:
    return end.join(lines).replace("{charset}", charset) + end


def error_of(data: bytes | str) -> ReportFormatError:
    with pytest.raises(ReportFormatError) as caught:
        read_oru_r01(data)
    return caught.value


def replaced(old: str, new: str) -> list[str]:
    return [new if line == old else line for line in TWO_REPORTS]


def test_two_obr_groups_give_two_reports() -> None:
    ct, mr = read_oru_r01(message(TWO_REPORTS).encode("utf-8"))

    assert ct.source == "hl7v2"
    assert ct.report_key == "hl7:F20240305001"
    assert (ct.status, ct.source_status) == ("final", "F")
    assert ct.study_instance_uid == STUDY_UID
    assert ct.accession_number == "CT20240305001"
    assert (ct.patient_id, ct.patient_name) == ("0012345678", "王小东")
    assert ct.title == "CT 胸部平扫"
    assert ct.modality == "CT"
    assert ct.findings == "双肺纹理清晰，\n右肺上叶见一直径约8mm结节"
    assert ct.impression == IMPRESSION
    assert (ct.author, ct.verifier) == ("李明", "张伟")
    assert ct.effective_at == datetime(2024, 3, 5, 10, 20, 30, tzinfo=CST)
    assert ct.issued_at == datetime(2024, 3, 5, 11, 2, tzinfo=CST)
    assert ct.language == "zh"
    assert ct.warnings == ()
    assert ct.original == {"segments": message(TWO_REPORTS).split("\r")[:-1], "obr": 1}

    assert mr.report_key == "hl7:F20240305002"
    assert (mr.status, mr.source_status) == ("preliminary", "P")
    assert mr.study_instance_uid == "1.2.3.4"
    assert mr.accession_number == "ORD002"  # OBR-18 empty: the placer order number
    assert mr.patient_id == "0012345678"
    assert mr.title == "MR 头颅平扫"
    assert mr.modality == "MR"
    assert mr.findings == "T2 & FLAIR\nA|B ^ C ~ D \\ E\nsecond\nno acute infarct"
    assert mr.impression == "Normal MRI."  # the OBX marked W (wrong) is skipped
    assert (mr.author, mr.verifier) == ("Smith John", "")
    assert mr.effective_at == datetime(2024, 3, 5)
    assert mr.effective_at.tzinfo is None
    assert mr.issued_at == datetime(2024, 3, 5, 14, 30)
    assert mr.original["obr"] == 2


def test_gb18030_bytes_declared_in_msh18() -> None:
    data = message(TWO_REPORTS, charset="GB 18030-2000").encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    ct, _ = read_oru_r01(data)
    assert ct.patient_name == "王小东"
    assert ct.impression == IMPRESSION
    assert ct.warnings == ()


def test_gb18030_bytes_without_charset_fall_back() -> None:
    data = message(TWO_REPORTS, charset="").encode("gb18030")
    assert read_oru_r01(data)[0].findings.startswith("双肺纹理清晰")


def test_gb18030_bytes_declared_as_utf8_decode_with_warning() -> None:
    data = message(TWO_REPORTS, charset="UNICODE UTF-8").encode("gb18030")
    ct, _ = read_oru_r01(data)
    assert ct.patient_name == "王小东"
    assert ct.warnings == ("MSH-18 says 'UNICODE UTF-8' but the message is gb18030",)


def test_unknown_charset_is_a_warning() -> None:
    ct, _ = read_oru_r01(message(TWO_REPORTS, charset="EBCDIC").encode("utf-8"))
    assert ct.warnings == ("MSH-18 character set 'EBCDIC' is not known; read as UTF-8/GB18030",)


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_segment_separators_and_mllp_framing(end: str) -> None:
    framed = "\x0b" + message(TWO_REPORTS, end=end) + "\x1c\r"
    assert [d.report_key for d in read_oru_r01(framed)] == ["hl7:F20240305001", "hl7:F20240305002"]


def test_placer_number_when_no_filler_number() -> None:
    obr = OBR_CT.replace("|F20240305001^RIS|", "||")
    (doc, _) = read_oru_r01(message(replaced(OBR_CT, obr)))
    assert doc.report_key == "hl7-placer:ORD001"


def test_text_impression_and_coded_value_and_uid_in_st() -> None:
    lines = [
        MSH,
        PID,
        OBR_MR,
        "OBX|1|ST|^Study Instance UID||1.2.840.99||||||F",
        "OBX|2|TX|^检查所见||所见一||||||F",
        "OBX|3|TX|^IMPRESSION||impression text||||||F",
        "OBX|4|CE|^印象||N18^未见异常^LOCAL||||||F",
    ]
    (doc,) = read_oru_r01(message(lines))
    assert doc.study_instance_uid == "1.2.840.99"
    assert doc.findings == "所见一"
    assert doc.impression == "impression text\n未见异常"


@pytest.mark.parametrize(("charset", "text"), [("GB 18030-2000", "中国"), ("UNICODE UTF-8", "中")])
def test_hex_escapes_are_bytes_in_the_declared_charset(charset: str, text: str) -> None:
    hex_value = "\\X" + text.encode("gb18030" if "GB" in charset else "utf-8").hex() + "\\"
    lines = [MSH, PID, OBR_MR, f"OBX|1|FT|^FINDINGS||{hex_value}\\.sp2\\\\H\\end\\N\\||||||F"]
    (doc,) = read_oru_r01(message(lines, charset=charset))
    assert doc.findings == f"{text}\n\nend"


@pytest.mark.parametrize(
    ("value", "name"),
    [("1001&李&明", "李明"), ("王医生", "王医生"), ("1001", ""), ("1001^赵^六", "赵六")],
)
def test_interpreter_names(value: str, name: str) -> None:
    obr = segment("OBR", {1: "1", 3: "F1", 18: "A1", 25: "F", 32: value})
    (doc,) = read_oru_r01(message([MSH, PID, obr]))
    assert doc.author == name


def test_partial_precision_times() -> None:
    obr = segment(
        "OBR", {1: "1", 3: "F1", 7: "202403", 18: "A1", 22: "20240305103000.5-0500", 25: "F"}
    )
    (doc,) = read_oru_r01(message([MSH, PID, obr]))
    assert doc.effective_at == datetime(2024, 3, 1)
    assert doc.issued_at == datetime(2024, 3, 5, 10, 30, 0, 500000, timezone(timedelta(hours=-5)))
    assert doc.warnings == ("OBR-7 of OBR #1 has no day; the 1st was used",)


def test_non_dicom_service_section_is_no_modality() -> None:
    obr = segment("OBR", {1: "1", 3: "F1", 18: "A1", 24: "RAD", 25: "F"})
    (doc,) = read_oru_r01(message([MSH, PID, obr]))
    assert doc.modality == ""


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("P", "preliminary"),
        ("R", "preliminary"),
        ("I", "preliminary"),
        ("S", "preliminary"),
        ("C", "amended"),
        ("A", "amended"),
        ("X", "cancelled"),
        ("D", "cancelled"),
    ],
)
def test_status_mapping(code: str, status: str) -> None:
    obr = segment("OBR", {1: "1", 3: "F1", 18: "A1", 25: code})
    (doc,) = read_oru_r01(message([MSH, PID, obr]))
    assert (doc.status, doc.source_status) == (status, code)


# --- Errors --------------------------------------------------------------------------------


def test_missing_obr25() -> None:
    err = error_of(message(replaced(OBR_MR, OBR_MR.replace("|MR|P", "|MR|"))))
    assert err.field == "OBR-25"
    assert "OBR #2" in err.message


def test_unknown_obr25() -> None:
    err = error_of(message(replaced(OBR_CT, OBR_CT.replace("|CT|F", "|CT|Z"))))
    assert err.field == "OBR-25"
    assert "'Z'" in err.message


@pytest.mark.parametrize("kind", ["ORM^O01", "ADT^A08", "ORU^R30", ""])
def test_wrong_message_type(kind: str) -> None:
    msh = MSH.replace("ORU^R01^ORU_R01", kind)
    err = error_of(message(replaced(MSH, msh)))
    assert err.field == "MSH-9"
    assert "ORU^R01" in err.message


@pytest.mark.parametrize("data", ["", "PID|1||X", b"\x0b\x1c", "MSH|"])
def test_no_msh(data: bytes | str) -> None:
    assert error_of(data).field == "MSH"


def test_no_obr() -> None:
    assert error_of(message([MSH, PID])).field == "OBR"


def test_missing_patient_id() -> None:
    assert error_of(message(replaced(PID, "PID|1||^^^HOSP^MR||王^小东"))).field == "PID-3"
    no_pid = [line for line in TWO_REPORTS if line != PID]
    assert error_of(message(no_pid)).field == "PID-3"


def test_missing_order_numbers() -> None:
    obr = OBR_CT.replace("|ORD001|F20240305001^RIS|", "|||")
    err = error_of(message(replaced(OBR_CT, obr)))
    assert err.field == "OBR-3"
    assert "OBR #1" in err.message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (f"ZDS|{STUDY_UID}^RIS^Application^DICOM", "ZDS|1.2.03^RIS", "ZDS-1"),
        (
            "OBX|1|RP|113014^Study Instance UID^DCM||1.2.3.4^RIS^Application^DICOM||||||F",
            "OBX|1|RP|113014^Study Instance UID^DCM||urn:oid:1.2.3.4^RIS||||||F",
            "OBX-5",
        ),
    ],
)
def test_invalid_study_uid(old: str, new: str, field: str) -> None:
    err = error_of(message(replaced(old, new)))
    assert err.field == field
    assert "not a DICOM Study Instance UID" in err.message


@pytest.mark.parametrize(
    ("number", "value"),
    [(7, "2024-03-05"), (7, "20241305"), (22, "202403051261"), (22, "20240305+08")],
)
def test_unparseable_times(number: int, value: str) -> None:
    obr = segment("OBR", {1: "1", 3: "F1", 18: "A1", 25: "F", number: value})
    assert error_of(message([MSH, PID, obr])).field == f"OBR-{number}"


def test_undecodable_bytes() -> None:
    data = message([MSH, PID, OBR_CT], charset="").encode("utf-8") + b"\xff\xff\xff"
    assert error_of(data).field == "MSH-18"


# --- ACK -----------------------------------------------------------------------------------


def test_ack_accept() -> None:
    text = ack(message(TWO_REPORTS).encode("utf-8"))
    assert text.endswith("\r")
    msh, msa = text.rstrip("\r").split("\r")
    fields = msh.split("|")
    assert fields[:6] == ["MSH", "^~\\&", "CLOUDFILM", "区域影像云", "RIS", "市第一人民医院"]
    assert re.fullmatch(r"\d{14}[+-]\d{4}", fields[6])
    assert fields[8] == "ACK^R01^ACK"
    assert fields[9] and fields[9] != "MSG20240305-0001"
    assert fields[10:12] == ["P", "2.5"]
    assert fields[17] == "UNICODE UTF-8"
    assert msa == "MSA|AA|MSG20240305-0001"


def test_ack_error_text_is_escaped() -> None:
    text = ack(message(TWO_REPORTS), "AE", "OBR-25: status 'Z' | see\nmanual ^ \\ ~ &")
    msa = text.rstrip("\r").split("\r")[1]
    assert (
        msa == "MSA|AE|MSG20240305-0001|OBR-25: status 'Z' \\F\\ see manual \\S\\ \\E\\ \\R\\ \\T\\"
    )


def test_ack_control_ids_are_unique() -> None:
    first, second = (ack(message(TWO_REPORTS)).split("|")[9] for _ in range(2))
    assert first != second


def test_ack_for_a_message_that_cannot_be_read() -> None:
    broken = message([MSH.replace("ORU^R01^ORU_R01", "ORM^O01"), "garbage"]).encode() + b"\xff"
    assert (
        ack(broken, "AR", "MSH-9: wrong type").split("\r")[1]
        == "MSA|AR|MSG20240305-0001|MSH-9: wrong type"
    )


def test_ack_needs_msh_and_control_id() -> None:
    with pytest.raises(ReportFormatError) as no_msh:
        ack("PID|1||X\r")
    assert no_msh.value.field == "MSH"
    with pytest.raises(ReportFormatError) as no_id:
        ack(message(replaced(MSH, MSH.replace("|MSG20240305-0001|", "||"))))
    assert no_id.value.field == "MSH-10"


def test_ack_refuses_unknown_code() -> None:
    with pytest.raises(ValueError, match="acknowledgement code"):
        ack(message(TWO_REPORTS), "OK")
