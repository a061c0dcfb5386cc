"""Read HL7 v2 ORU^R01 radiology results (ER7 text) and build their ACK^R01.

ER7 is split into segments and fields by the ``hl7`` package (python-hl7). Repetitions,
components and sub-components are split, and escape sequences undone, here: python-hl7
unescapes ``\\.br\\`` to ``\\r`` and logs whole field values (patient data) when it meets an
escape it does not know.

Decoding
--------
Bytes are decoded by MSH-18 (its first repetition): ``UNICODE UTF-8`` -> UTF-8,
``GB 18030-2000`` (also ``GB18030``, ``GBK``, ``GB2312``, which GB18030 contains) ->
GB18030; absent, ``ASCII`` or unknown -> UTF-8, then GB18030. When the declared set does
not decode, the other one is tried and a warning kept (Chinese RIS often declare UTF-8 and
send GBK). Segments may end in ``\\r``, ``\\n`` or ``\\r\\n``; MLLP framing bytes are dropped.

Mapping onto :class:`ReportDocument` (one per OBR; OBX/ZDS after an OBR belong to it)
-------------------------------------------------------------------------------------
- ``report_key``: ``hl7:<OBR-3.1>`` (filler order number); without one,
  ``hl7-placer:<OBR-2.1>`` - a different prefix, so a placer number can never collide with
  another report's filler number.
- ``accession_number``: OBR-18.1 (Placer Field 1, where IHE Radiology puts it), else
  OBR-2.1 (the placer order number, which many Chinese RIS use as accession number).
- ``study_instance_uid``: ZDS-1.1 (IHE's place), else an OBX of type ST/RP whose OBX-3 code
  is DCM ``113014`` (Study) or whose text says "Study Instance UID" (RP: its component 1).
- ``findings``: OBX whose OBX-3 code is LOINC 59776-5, or ends in the ``&GDT`` suffix (or
  is ``GDT``), or whose text says "FINDINGS"/"所见"; ``impression``: 19005-8, ``&IMP``,
  "IMPRESSION"/"诊断"/"印象". Codes win over text; findings words over impression words.
  Several OBX of one kind are joined with newlines, OBX-5 repetitions too; OBX with OBX-11
  ``W`` (wrong) or ``D`` (deleted) are skipped.
- ``status``: OBR-25 (mapping in ``document.py``). ``effective_at``: OBR-7;
  ``issued_at``: OBR-22. Times ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``: aware with a zone,
  naive without; a year or year-month gives a warning.
- ``author`` (报告医师): OBR-32 (principal result interpreter); ``verifier`` (审核医师):
  OBR-33 (assistant result interpreter), as Chinese RIS fill them. Their first repetition's
  component 1 sub-components ``ID&family&given``: family then given, no space when Chinese.
  A lone sub-component without digits is taken as the name; ``ID^family^given`` written as
  components (a common sender slip) is read too.
- ``patient_id``: PID-3 first repetition, component 1 (required); ``patient_name``: PID-5.
- ``title``: OBR-4.2, else OBR-4.1; ``modality``: OBR-24 when a DICOM modality code;
  ``language``: MSH-19.1.
- ``original``: ``{"segments": [ER7 lines], "obr": <1-based OBR number>}``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import hl7

from cloudfilm.infrastructure.dicom.uids import is_valid_uid
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError, Status

__all__ = ["ack", "read_oru_r01"]

_CHARSETS = {
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "GB180302000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
}
_DEFAULT_CHARSETS = frozenset({"", "ASCII"})
_FALLBACK_CODECS = ("utf-8", "gb18030")

_STATUS: dict[str, Status] = {
    "P": "preliminary",
    "R": "preliminary",
    "I": "preliminary",
    "S": "preliminary",
    "F": "final",
    "C": "amended",
    "A": "amended",
    "X": "cancelled",
    "D": "cancelled",
}
_ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})

# Acquisition modalities of PS3.3 C.7.3.1.1.1 (same list as the FHIR reader).
_MODALITIES = frozenset(
    {
        "AR", "BDUS", "BMD", "CR", "CT", "DG", "DX", "ES", "GM", "HC", "IO", "IVOCT", "IVUS",
        "LS", "MG", "MR", "NM", "OAM", "OCT", "OP", "OPT", "OPTBSV", "OPTENF", "OPV", "PT",
        "PX", "RF", "RG", "SM", "TG", "US", "XA", "XC",
    }
)  # fmt: skip

_FINDINGS_WORDS = ("FINDINGS", "所见")
_IMPRESSION_WORDS = ("IMPRESSION", "诊断", "印象")
_SKIPPED_OBX_STATUS = frozenset({"W", "D"})
_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_HL7_TIME_RE = re.compile(
    r"(?P<year>\d{4})(?:(?P<month>\d{2})(?:(?P<day>\d{2})(?:(?P<hour>\d{2})"
    r"(?:(?P<minute>\d{2})(?:(?P<second>\d{2})(?:\.(?P<fraction>\d{1,4}))?)?)?)?)?)?"
    r"(?P<zone>[+-]\d{4})?"
)


@dataclass(frozen=True)
class _Separators:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


@dataclass
class _Message:
    """A parsed message with what is needed to read its values."""

    parsed: hl7.Message
    lines: list[str]
    separators: _Separators
    codec: str
    warnings: list[str]

    def raw(self, segment: hl7.Segment, number: int) -> str:
        """Field ``number`` as ER7 text (still escaped); "" when absent."""
        return str(segment[number]) if number < len(segment) else ""

    def parts(self, segment: hl7.Segment, number: int, component: int = 1) -> list[str]:
        """The escaped sub-components of the first repetition's ``component`` (1-based)."""
        repetition = self.raw(segment, number).split(self.separators.repetition)[0]
        components = repetition.split(self.separators.component)
        if component > len(components):
            return [""]
        return components[component - 1].split(self.separators.subcomponent)

    def value(self, segment: hl7.Segment, number: int, component: int = 1) -> str:
        """First repetition, ``component``, first sub-component, unescaped and stripped."""
        return self.unescape(self.parts(segment, number, component)[0]).strip()

    def unescape(self, text: str) -> str:
        return _unescape(text, self.separators, self.codec)


@dataclass
class _Group:
    """One OBR with the PID before it and the OBX/ZDS segments that belong to it."""

    number: int
    pid: hl7.Segment | None
    obr: hl7.Segment
    obx: list[hl7.Segment] = field(default_factory=list)
    zds: list[hl7.Segment] = field(default_factory=list)


def read_oru_r01(message: bytes | str) -> list[ReportDocument]:
    """Read an HL7 v2 ORU^R01 message into one :class:`ReportDocument` per OBR.

    Parameters
    ----------
    message : bytes or str
        The ER7 message; bytes are decoded by MSH-18 (module docstring).

    Returns
    -------
    list of ReportDocument
        ``source="hl7v2"``, in OBR order.

    Raises
    ------
    ReportFormatError
        When the message is not a readable ORU^R01, or an OBR group lacks a patient ID
        (``PID-3``), an order number (``OBR-3``), a known result status (``OBR-25``), or has
        a bad time (``OBR-7``/``OBR-22``) or study UID (``ZDS-1``/``OBX-5``).
    """
    warnings: list[str] = []
    text, codec = _decode(message, warnings)
    lines = _lines(text)
    parsed = _parse(lines)
    msg = _Message(parsed, lines, _separators(parsed), codec, warnings)
    _check_message_type(msg)
    return [_read_group(msg, group) for group in _groups(msg)]


# --- Decoding and parsing --------------------------------------------------------------


def _declared_charset(message: bytes) -> str:
    """MSH-18's first repetition, read from the ASCII bytes of the MSH segment."""
    first = re.split(rb"[\r\n]", message.lstrip(b"\x0b \t\r\n"), maxsplit=1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        return ""
    fields = first.split(first[3:4])
    if len(fields) < 18:
        return ""
    repetition = fields[1][1:2] or b"~"
    return fields[17].split(repetition)[0].decode("ascii", "replace").strip()


def _decode(message: bytes | str, warnings: list[str]) -> tuple[str, str]:
    """The message as text and the codec its bytes (and ``\\X..\\`` escapes) are in."""
    declared = _declared_charset(
        message.encode("utf-8", "replace") if isinstance(message, str) else message
    )
    key = re.sub(r"[\s_-]", "", declared).upper()
    codec = _CHARSETS.get(key)
    if isinstance(message, str):
        # Already text; MSH-18 still says what \X..\ escaped bytes are in.
        return message, codec or "utf-8"
    if codec is None and key not in _DEFAULT_CHARSETS:
        warnings.append(f"MSH-18 character set {declared!r} is not known; read as UTF-8/GB18030")
    for candidate in dict.fromkeys([codec or "utf-8", *_FALLBACK_CODECS]):
        try:
            text = message.decode(candidate)
        except UnicodeDecodeError:
            continue
        if codec and candidate != codec:
            warnings.append(f"MSH-18 says {declared!r} but the message is {candidate}")
        return text, candidate
    raise ReportFormatError(
        "MSH-18",
        f"the message bytes are not {declared or 'UTF-8'} (nor UTF-8 or GB18030); set MSH-18 "
        "to the character set actually used (UNICODE UTF-8 or GB 18030-2000)",
    )


def _lines(text: str) -> list[str]:
    """Segments, whatever the line ends; MLLP framing and blank lines dropped."""
    text = text.strip("\x0b\x1c\r\n")
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def _parse(lines: list[str]) -> hl7.Message:
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise ReportFormatError(
            "MSH", "the message does not start with an MSH segment (e.g. MSH|^~\\&|...)"
        )
    separators = lines[0][3:8]
    if len(set(separators)) != 5 or any(c.isalnum() or c.isspace() for c in separators):
        # python-hl7 only asserts this (an AssertionError, found by the fuzz tests).
        raise ReportFormatError(
            "MSH-2", f"the field separator and encoding characters {separators!r} must be "
            "five different punctuation characters, normally |^~\\&")
    try:
        return hl7.parse("\r".join(lines))
    except (hl7.HL7Exception, ValueError, IndexError, AssertionError) as exc:
        raise ReportFormatError("MSH", f"the message cannot be parsed as HL7 v2: {exc}") from None


def _separators(parsed: hl7.Message) -> _Separators:
    # python-hl7 keeps them as "<segment><field><repetition><component><subcomponent>".
    seps = parsed.separators
    return _Separators(seps[1], seps[3], seps[2], parsed.esc, seps[4])


@lru_cache(maxsize=8)
def _escape_pattern(escape: str) -> re.Pattern[str]:
    esc = re.escape(escape)
    return re.compile(f"{esc}([^{esc}\\r\\n]*){esc}")


def _unescape(text: str, seps: _Separators, codec: str) -> str:
    """Undo HL7 escape sequences (v2.5 2.7); formatting and charset switches are dropped."""
    if seps.escape not in text:
        return text
    simple = {
        "F": seps.field,
        "S": seps.component,
        "T": seps.subcomponent,
        "R": seps.repetition,
        "E": seps.escape,
    }

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in simple:
            return simple[code]
        if code in (".br", ".ce"):
            return "\n"
        if code.startswith(".sp"):
            return "\n" * (int(code[3:]) if code[3:].isdigit() else 1)
        if code.startswith("X"):
            try:
                return bytes.fromhex(code[1:]).decode(codec, "replace")
            except ValueError:
                return ""
        return ""  # \H\ \N\ highlighting, .in/.ti/.fi/.nf layout, \Z..\ \C..\ \M..\

    return _escape_pattern(seps.escape).sub(replace, text)


def _check_message_type(msg: _Message) -> None:
    msh = msg.parsed.segment("MSH")
    kind, event = msg.value(msh, 9, 1), msg.value(msh, 9, 2)
    if (kind, event) != ("ORU", "R01"):
        got = msg.raw(msh, 9) or "empty"
        raise ReportFormatError(
            "MSH-9",
            f"message type is {got}; only ORU^R01 (unsolicited observation result) is accepted",
        )


def _groups(msg: _Message) -> list[_Group]:
    groups: list[_Group] = []
    current: _Group | None = None
    pid: hl7.Segment | None = None
    pending_zds: list[hl7.Segment] = []
    for segment in msg.parsed:
        name = str(segment[0])
        if name == "PID":
            pid, current = segment, None
        elif name == "ORC":
            current = None  # a new order: what follows belongs to its OBR
        elif name == "OBR":
            current = _Group(len(groups) + 1, pid, segment, zds=pending_zds)
            groups.append(current)
            pending_zds = []
        elif name == "OBX" and current is not None:
            current.obx.append(segment)
        elif name == "ZDS":
            (current.zds if current is not None else pending_zds).append(segment)
    if not groups:
        raise ReportFormatError("OBR", "the message has no OBR segment, so no report")
    return groups


# --- One OBR group ---------------------------------------------------------------------


def _ordinal(group: _Group) -> str:
    return f"OBR #{group.number}"


def _read_group(msg: _Message, group: _Group) -> ReportDocument:
    warnings = list(msg.warnings)
    obr = group.obr
    status, source_status = _status(msg, group)
    texts = _obx_texts(msg, group)
    study_uid = _study_uid(msg, group, warnings)
    accession = msg.value(obr, 18) or msg.value(obr, 2)
    if not study_uid and not accession:
        warnings.append(f"{_ordinal(group)} names no study (no UID, OBR-18 or OBR-2)")
    patient_id, patient_name = _patient(msg, group)
    msh = msg.parsed.segment("MSH")
    modality = msg.value(obr, 24).upper()
    return ReportDocument(
        source="hl7v2",
        report_key=_report_key(msg, group),
        status=status,
        source_status=source_status,
        study_instance_uid=study_uid,
        accession_number=accession,
        patient_id=patient_id,
        patient_name=patient_name,
        title=msg.value(obr, 4, 2) or msg.value(obr, 4, 1),
        modality=modality if modality in _MODALITIES else "",
        findings="\n".join(texts["findings"]),
        impression="\n".join(texts["impression"]),
        author=_interpreter(msg, obr, 32),
        verifier=_interpreter(msg, obr, 33),
        effective_at=_time(msg.value(obr, 7), "OBR-7", group, warnings),
        issued_at=_time(msg.value(obr, 22), "OBR-22", group, warnings),
        language=msg.value(msh, 19),
        warnings=tuple(warnings),
        original={"segments": list(msg.lines), "obr": group.number},
    )


def _report_key(msg: _Message, group: _Group) -> str:
    if filler := msg.value(group.obr, 3):
        return f"hl7:{filler}"
    if placer := msg.value(group.obr, 2):
        return f"hl7-placer:{placer}"
    raise ReportFormatError(
        "OBR-3",
        f"{_ordinal(group)} has no filler order number (OBR-3) nor placer order number "
        "(OBR-2): later corrections of this report are matched by it, so send OBR-3",
    )


def _status(msg: _Message, group: _Group) -> tuple[Status, str]:
    raw = msg.value(group.obr, 25)
    if not raw:
        raise ReportFormatError(
            "OBR-25", f"{_ordinal(group)} has no result status; send e.g. F (final) or P"
        )
    status = _STATUS.get(raw.upper())
    if status is None:
        raise ReportFormatError(
            "OBR-25",
            f"{_ordinal(group)} result status {raw!r} is not one of "
            "P/R/I/S (preliminary), F (final), C/A (corrected), X/D (cancelled)",
        )
    return status, raw


def _patient(msg: _Message, group: _Group) -> tuple[str, str]:
    if group.pid is None:
        raise ReportFormatError("PID-3", f"no PID segment comes before {_ordinal(group)}")
    patient_id = msg.value(group.pid, 3)
    if not patient_id:
        raise ReportFormatError(
            "PID-3", "the patient ID (PID-3, first repetition, component 1) is empty"
        )
    family = msg.value(group.pid, 5, 1)
    given = msg.value(group.pid, 5, 2)
    return patient_id, _join_name(family, given)


def _join_name(family: str, *given: str) -> str:
    """Family name first; no spaces between Chinese parts (王 + 小东 -> 王小东)."""
    parts = [p for p in (family, *given) if p]
    separator = "" if any(_CJK_RE.search(p) for p in parts) else " "
    return separator.join(parts)


def _interpreter(msg: _Message, obr: hl7.Segment, number: int) -> str:
    """Name of OBR-32/33 (NDL: component 1 is ``ID&family&given&middle``)."""
    subs = [msg.unescape(s).strip() for s in msg.parts(obr, number, 1)]
    subs += [""] * (4 - len(subs))
    if name := _join_name(subs[1], subs[2], subs[3]):
        return name
    family, given = msg.value(obr, number, 2), msg.value(obr, number, 3)
    if not (family + given).isdigit() and (name := _join_name(family, given)):
        return name  # ID^family^given: components where sub-components belong
    return subs[0] if not any(ch.isdigit() for ch in subs[0]) else ""


def _obx_kind(msg: _Message, obx: hl7.Segment) -> str:
    subs = [msg.unescape(s).strip().upper() for s in msg.parts(obx, 3, 1)]
    code, suffix = subs[0], subs[-1] if len(subs) > 1 else ""
    text = msg.value(obx, 3, 2).upper()
    if code == "59776-5" or "GDT" in (code, suffix):
        return "findings"
    if code == "19005-8" or "IMP" in (code, suffix):
        return "impression"
    if code == "113014" or "STUDY INSTANCE UID" in text:
        return "study"
    if any(word in text for word in _FINDINGS_WORDS):
        return "findings"
    if any(word in text for word in _IMPRESSION_WORDS):
        return "impression"
    return ""


def _obx_text(msg: _Message, obx: hl7.Segment) -> str:
    """OBX-5, repetitions on their own lines; coded values by their text."""
    coded = msg.value(obx, 2).upper() in ("CE", "CWE")
    lines = []
    for repetition in msg.raw(obx, 5).split(msg.separators.repetition):
        if coded:
            components = repetition.split(msg.separators.component)
            chosen = components[1] if len(components) > 1 and components[1] else components[0]
            lines.append(msg.unescape(chosen))
        else:
            lines.append(msg.unescape(repetition))
    return "\n".join(lines).strip()


def _obx_texts(msg: _Message, group: _Group) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {"findings": [], "impression": []}
    for obx in group.obx:
        if msg.value(obx, 11).upper() in _SKIPPED_OBX_STATUS:
            continue
        kind = _obx_kind(msg, obx)
        if kind in texts and (text := _obx_text(msg, obx)):
            texts[kind].append(text)
    return texts


def _checked_uid(value: str, where: str, group: _Group) -> str:
    if not is_valid_uid(value):
        raise ReportFormatError(
            where,
            f"{_ordinal(group)}: {value!r} is not a DICOM Study Instance UID (only digits "
            "and dots, no component with a leading zero, at most 64 characters)",
        )
    return value


def _study_uid(msg: _Message, group: _Group, warnings: list[str]) -> str:
    uids = []
    for zds in group.zds:
        if value := msg.value(zds, 1):
            uids.append(_checked_uid(value, "ZDS-1", group))
    for obx in group.obx:
        value_type = msg.value(obx, 2).upper()
        if value_type in ("ST", "RP") and _obx_kind(msg, obx) == "study":
            # RP is pointer^application^type^subtype; ST is the UID itself.
            value = msg.value(obx, 5) if value_type == "RP" else _obx_text(msg, obx)
            if value:
                uids.append(_checked_uid(value, "OBX-5", group))
    distinct = list(dict.fromkeys(uids))
    if len(distinct) > 1:
        warnings.append(f"{_ordinal(group)} names {len(distinct)} studies; the first was used")
    return distinct[0] if distinct else ""


def _time(text: str, where: str, group: _Group, warnings: list[str]) -> datetime | None:
    """HL7 TS ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``; aware only with a zone."""
    if not text:
        return None
    match = _HL7_TIME_RE.fullmatch(text)
    hint = f"{_ordinal(group)}: {text!r} is not an HL7 time (YYYYMMDDHHMMSS[+ZZZZ])"
    if match is None:
        raise ReportFormatError(where, hint)
    parts = match.groupdict()
    if parts["day"] is None:
        warnings.append(f"{where} of {_ordinal(group)} has no day; the 1st was used")
    zone = parts["zone"]
    try:
        tz = None
        if zone:
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:]))
            tz = timezone(-offset if zone[0] == "-" else offset)
        return datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((parts["fraction"] or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        raise ReportFormatError(where, hint) from None


# --- Acknowledgement -------------------------------------------------------------------


def _escape(text: str, seps: _Separators) -> str:
    """Escape `text` for an ST field; line breaks become spaces (ST has none)."""
    text = text.replace(seps.escape, f"{seps.escape}E{seps.escape}")
    for char, code in (
        (seps.field, "F"),
        (seps.component, "S"),
        (seps.repetition, "R"),
        (seps.subcomponent, "T"),
    ):
        text = text.replace(char, f"{seps.escape}{code}{seps.escape}")
    return re.sub(r"[\r\n]+", " ", text)


def ack(message: bytes | str, code: str = "AA", text: str = "") -> str:
    """Build the ACK^R01 answering `message`.

    Parameters
    ----------
    message : bytes or str
        The received message; only its MSH segment needs to be readable.
    code : str
        MSA-1 acknowledgement code: AA (accepted), AE (error), AR (rejected), or the
        enhanced-mode CA/CE/CR.
    text : str
        MSA-3 text message, e.g. a :class:`ReportFormatError` message; escaped here.

    Returns
    -------
    str
        ER7 text (segments ended by ``\\r``), MSH with sender and receiver swapped, the
        original's separators, processing id, version and MSH-18; encode it in the
        character set MSH-18 names.

    Raises
    ------
    ReportFormatError
        When the MSH segment is missing or has no message control id (MSH-10).
    ValueError
        When `code` is not an HL7 acknowledgement code.
    """
    if code not in _ACK_CODES:
        raise ValueError(f"not an HL7 acknowledgement code: {code!r}")
    msg = _msh_only(message)
    msh = msg.parsed.segment("MSH")
    control_id = msg.raw(msh, 10)
    if not control_id:
        raise ReportFormatError("MSH-10", "the message has no control id to acknowledge")
    seps = msg.separators
    now = datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
    fields = ["MSH", msg.raw(msh, 2), *(msg.raw(msh, n) for n in (5, 6, 3, 4))]
    fields += [now, "", f"ACK{seps.component}R01{seps.component}ACK", uuid.uuid4().hex[:20]]
    fields += [msg.raw(msh, 11) or "P", msg.raw(msh, 12) or "2.5"]
    if charset := msg.raw(msh, 18):
        fields += ["", "", "", "", "", charset]
    msa = ["MSA", code, control_id, _escape(text, seps)] if text else ["MSA", code, control_id]
    return "\r".join([seps.field.join(fields), seps.field.join(msa)]) + "\r"


def _msh_only(message: bytes | str) -> _Message:
    """The message's MSH alone: an ACK must be possible even when the rest is broken."""
    warnings: list[str] = []
    try:
        text, codec = _decode(message, warnings)
    except ReportFormatError:
        # Undecodable bytes still start with an ASCII MSH: acknowledge them (AE/AR).
        raw = message if isinstance(message, bytes) else message.encode()
        text, codec = raw.decode("utf-8", "replace"), "utf-8"
    lines = _lines(text)[:1]
    parsed = _parse(lines)
    return _Message(parsed, lines, _separators(parsed), codec, warnings)
