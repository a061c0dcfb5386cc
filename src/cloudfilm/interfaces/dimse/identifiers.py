"""C-FIND/C-MOVE/C-GET identifiers to search parameters and back (PS3.4 C.2.2, C.4).

The archive's one search service speaks (keyword, value) parameters, as QIDO-RS does; this
module turns an identifier into them and turns the service's DICOM JSON matches into
response identifiers holding exactly the requested keys (PS3.4 C.4.1.1.3.2).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import dictionary_has_tag, get_entry
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cloudfilm.services.archive.query import Level, parse_search
from cloudfilm.services.errors import InvalidQueryError

Model = Literal["patient", "study"]
QRLevel = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]

_SEARCH_LEVEL: dict[str, Level] = {
    "PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance",
}
_MODEL_LEVELS: dict[Model, tuple[str, ...]] = {
    "patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    "study": ("STUDY", "SERIES", "IMAGE"),
}
# Attributes of the PATIENT level (PS3.4 Table C.6-1): a patient query matches only these.
PATIENT_KEYS = frozenset(
    {"PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex"}
)
_NOT_RETURN_KEYS = frozenset({0x00080005, 0x00080052})  # SpecificCharacterSet, Q/R level
_RETRIEVE_URL = "00081190"  # DICOMweb URL relative to a base a DIMSE peer does not have
_PATIENT_COUNTS = ("00201200", "00201202", "00201204")  # Number of Patient Related *


@dataclass(frozen=True, slots=True)
class FindQuery:
    """One C-FIND request: its level, search parameters and requested return keys."""

    level: QRLevel
    params: tuple[tuple[str, str], ...]
    requested: tuple[tuple[int, str], ...]  # (tag, VR) in identifier order

    @property
    def search_level(self) -> Level:
        return _SEARCH_LEVEL[self.level]


def query_level(identifier: Dataset, model: Model) -> QRLevel:
    """The identifier's QueryRetrieveLevel, checked against the information model.

    Raises
    ------
    InvalidQueryError
        Missing, unknown, or not a level of the model (PS3.4 C.6.1.1, C.6.2.1).
    """
    return _checked_level(str(identifier.get("QueryRetrieveLevel", "") or ""), model)


def _checked_level(text: str, model: Model) -> QRLevel:
    level = text.strip().upper()
    if not level:
        raise InvalidQueryError("QueryRetrieveLevel (0008,0052) is missing")
    if level not in _MODEL_LEVELS[model]:
        raise InvalidQueryError(
            f"QueryRetrieveLevel {level!r} is not a level of the {model.title()} Root model "
            f"(use {', '.join(_MODEL_LEVELS[model])})"
        )
    return level  # type: ignore[return-value]


# One element of an identifier: tag, VR, keyword, whether it is a sequence or private,
# and its text (or what computes it, only for keys that may become parameters).
_Element = tuple[int, str, str, bool, "str | Callable[[], str]"]


def parse_find(identifier: Dataset, model: Model) -> FindQuery:
    """Turn a C-FIND identifier into search parameters and return keys.

    Non-empty keys the archive matches on become parameters; empty keys, ``*``, sequences
    and keys it cannot match on are return keys only (universal matching, PS3.4 C.2.2.2.3
    lets an SCP treat optional keys it does not support that way).

    Raises
    ------
    InvalidQueryError
        Bad level, or a value the search service cannot read (e.g. a malformed date).
    """
    level = query_level(identifier, model)
    return _find_query(level, (
        (int(e.tag), e.VR, e.keyword, e.VR == "SQ" or e.tag.is_private,
         functools.partial(element_text, e)) for e in identifier))


def parse_find_encoded(data: bytes, model: Model, *, implicit_vr: bool) -> FindQuery | None:
    """:func:`parse_find` of an identifier still encoded (Little Endian), without pydicom
    decoding it (with ``parse_find``, a tenth of a C-FIND's handler CPU, cProfile).

    Only for plain identifiers, as SCUs send them: known public tags in ascending order,
    each with an unambiguous VR and an empty value or printable ASCII text of a string VR
    (one trailing NUL allowed), and a SpecificCharacterSet in which ASCII reads as ASCII.
    None for anything else: the caller then decodes it with pydicom (both give the same
    query, tested).

    Raises
    ------
    InvalidQueryError
        As :func:`parse_find`.
    """
    elements = _plain_elements(data, implicit_vr)
    if elements is None:
        return None
    texts = {tag: text for tag, _, _, _, text in elements}
    if texts.get(0x00080005, "") not in _ASCII_CHARSETS:
        return None
    level = _checked_level(str(texts.get(0x00080052, "")), model)
    return _find_query(level, elements)


def _find_query(level: QRLevel, elements: Iterable[_Element]) -> FindQuery:
    search_level = _SEARCH_LEVEL[level]
    params: list[tuple[str, str]] = []
    requested: list[tuple[int, str]] = []
    for tag, vr, keyword, opaque, text in elements:
        if tag in _NOT_RETURN_KEYS or tag >> 16 == 0x0002:
            continue
        requested.append((tag, vr))
        if not keyword or opaque:
            continue
        value = text if isinstance(text, str) else text()
        if value in ("", "*"):
            continue
        if level == "PATIENT" and keyword not in PATIENT_KEYS:
            continue
        if matchable(search_level, keyword):
            params.append((keyword, value))
    if search_level == "instance":
        extra = [kw for kw in (_keyword(tag) for tag, _ in requested) if kw]
        if extra:
            params.append(("includefield", ",".join(extra)))
    return FindQuery(level, tuple(params), tuple(requested))


# String VRs whose ASCII text pydicom reads as is (padding and spaces aside); LT, ST, UT
# and UR hold one value, the others split at backslashes.
_PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI", "LT",
                        "ST", "UT", "UC", "UR"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_KNOWN_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                        "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ",
                        "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT",
                        "UV"})
# Character sets in which printable ASCII bytes are those characters (PS3.5 6.1.2.5).
_ASCII_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "GB18030", "GBK"})
_PRINTABLE = bytes(range(0x20, 0x7F))
_TAG = struct.Struct("<HH")
_UL = struct.Struct("<I")
_US = struct.Struct("<H")


def _plain_elements(data: bytes, implicit_vr: bool) -> list[_Element] | None:
    """The elements of a plain identifier (:func:`parse_find_encoded`), or None."""
    elements: list[_Element] = []
    offset, end, last = 0, len(data), -1
    while offset < end:
        if offset + 8 > end:
            return None
        group, element = _TAG.unpack_from(data, offset)
        tag = group << 16 | element
        # Repeating groups (50xx, 60xx) are not in the dictionary proper: pydicom's route.
        if tag <= last or group & 1 or element == 0 or not dictionary_has_tag(tag):
            return None
        entry = get_entry(tag)
        last = tag
        if implicit_vr:
            vr = entry[0]
            (length,) = _UL.unpack_from(data, offset + 4)
            offset += 8
        else:
            vr = data[offset + 4:offset + 6].decode("latin-1")
            if vr in _LONG_VRS:
                if offset + 12 > end:
                    return None
                (length,) = _UL.unpack_from(data, offset + 8)
                offset += 12
            else:
                (length,) = _US.unpack_from(data, offset + 6)
                offset += 8
        if vr not in _KNOWN_VRS or offset + length > end:
            return None
        raw = data[offset:offset + length]
        offset += length
        text = _plain_text(raw, vr) if raw else ""
        if text is None:
            return None
        elements.append((tag, vr, entry[4], vr == "SQ", text))
    return elements


def _plain_text(raw: bytes, vr: str) -> str | None:
    """What :func:`element_text` gives for ``raw`` as pydicom would decode it, for plain
    ASCII text; None for anything else."""
    if vr not in _PLAIN_VRS:
        return None
    if raw.endswith(b"\0") and vr not in ("AE", "UR"):  # pydicom keeps their NUL
        raw = raw[:-1]
    if raw.translate(None, _PRINTABLE):
        return None  # control characters (an ISO 2022 escape), NULs, non-ASCII bytes
    if vr == "PN" and b"=" in raw:
        return None  # component groups: pydicom drops empty trailing ones ("Doe=" is "Doe")
    text = raw.decode("ascii")
    parts = [text] if vr in _SINGLE_VALUED else text.split("\\")
    return "\\".join(part.strip() for part in parts)


def element_text(elem: DataElement) -> str:
    """An element's value as the text a QIDO parameter would carry."""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return ""  # binary values are not matching keys
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


@functools.lru_cache(maxsize=1024)
def matchable(level: Level, keyword: str) -> bool:
    """Whether the search service matches ``keyword`` at ``level`` (probe with universal)."""
    try:
        parse_search(level, [(keyword, "")])
    except InvalidQueryError:
        return False
    return True


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or ""


def group_by_patient(studies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Study matches folded into patient matches (PatientID + issuer), with counts.

    References
    ----------
    PS3.4 C.6.1.1.2: Number of Patient Related Studies/Series/Instances.
    """
    patients: dict[tuple[str, str], dict[str, Any]] = {}
    for study in studies:
        key = (_first(study, "00100020"), _first(study, "00100021"))
        found = patients.get(key)
        if found is None:
            found = {k: v for k, v in study.items() if k.startswith("0010")}
            for tag in _PATIENT_COUNTS:
                found[tag] = {"vr": "IS", "Value": [0]}
            patients[key] = found
        found["00201200"]["Value"][0] += 1
        found["00201202"]["Value"][0] += int(_first(study, "00201206") or 0)
        found["00201204"]["Value"][0] += int(_first(study, "00201208") or 0)
    return list(patients.values())


def _first(doc: dict[str, Any], tag: str) -> str:
    values = doc.get(tag, {}).get("Value") or [""]
    return str(values[0])


def response_identifier(match: dict[str, Any], query: FindQuery, ae_title: str) -> Dataset:
    """The C-FIND response identifier: each requested key, valued from the match or empty.

    References
    ----------
    PS3.4 C.4.1.1.3.2 (response identifier), C.4.1.1.3.1 (zero-length for unknown values).
    """
    doc: dict[str, Any] = {}
    for tag, _vr in query.requested:
        key = f"{tag:08X}"
        item = match.get(key)
        if item is None or key == _RETRIEVE_URL or "BulkDataURI" in item:
            continue
        doc[key] = item
    ds = Dataset.from_json(doc) if doc else Dataset()
    for tag, vr in query.requested:
        if tag not in ds:
            ds.add_new(tag, vr, None)
    # Values come back as Unicode text from the index: UTF-8 says so (PS3.5 6.1.2.3).
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = query.level
    ds.RetrieveAETitle = ae_title
    return ds


# VRs whose DICOM JSON values encode as text joined with "\\" (PS3.18 F.2.3, PS3.5 6.2);
# anything else (sequences, binary, DS, AT) takes the Dataset route.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT", "PN", "IS"})
_UTF8_PADDED = b"ISO_IR 192"  # even length already


def identifier_bytes(match: dict[str, Any], query: FindQuery, ae_title: str, *,
                     implicit_vr: bool) -> bytes | None:
    """:func:`response_identifier` encoded in Little Endian (implicit or explicit VR), from
    the match's values without a pydicom Dataset: each value is encoded once (UTF-8,
    padded) and the elements are written in tag order, byte for byte what pydicom writes
    (tested). Building and encoding the Dataset per match was a tenth of a C-FIND's server
    CPU (py-spy). None when a value is not plain text or a requested key is a sequence
    (the caller then uses :func:`response_identifier`).
    """
    values: dict[int, tuple[str, bytes]] = {}
    for tag, vr in query.requested:
        key = f"{tag:08X}"
        item = match.get(key)
        if item is None or key == _RETRIEVE_URL or "BulkDataURI" in item:
            if len(vr) != 2 or vr == "SQ":
                return None
            values[tag] = (vr, b"")
            continue
        vr = item.get("vr", vr)
        encoded = _text_value(vr, item.get("Value"))
        if encoded is None:
            return None
        values[tag] = (vr, encoded)
    values[0x00080005] = ("CS", _UTF8_PADDED)
    values[0x00080052] = ("CS", _padded("CS", query.level.encode()))
    values[0x00080054] = ("AE", _padded("AE", ae_title.encode()))
    out = bytearray()
    for tag in sorted(values):
        vr, value = values[tag]
        group, element = tag >> 16, tag & 0xFFFF
        if implicit_vr:
            out += _IMPLICIT_HEAD.pack(group, element, len(value))
        elif vr in _LONG_VRS:
            out += _EXPLICIT_LONG_HEAD.pack(group, element, vr.encode(), 0, len(value))
        else:
            out += _EXPLICIT_HEAD.pack(group, element, vr.encode(), len(value))
        out += value
    return bytes(out)


_IMPLICIT_HEAD = struct.Struct("<HHI")
_EXPLICIT_HEAD = struct.Struct("<HH2sH")
_EXPLICIT_LONG_HEAD = struct.Struct("<HH2sHI")
# Explicit VR with a 4-byte length (PS3.5 7.1.2, Table 7.1-1).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                       "UT", "UV"})


def _text_value(vr: str, value: Any) -> bytes | None:
    if vr not in _TEXT_VRS:
        return None
    if not value:
        return b""
    parts = []
    for v in value:
        if vr == "PN":
            if not isinstance(v, dict) or set(v) - {"Alphabetic"}:
                return None  # ideographic/phonetic groups: pydicom joins them
            v = v.get("Alphabetic", "")
        elif vr == "IS":
            if not isinstance(v, int) or isinstance(v, bool):
                return None
            v = str(v)
        elif not isinstance(v, str):
            return None
        parts.append(v)
    return _padded(vr, "\\".join(parts).encode("utf-8"))


def _padded(vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    return value


def uid_list(identifier: Dataset, keyword: str, *, required: bool) -> list[str]:
    """The UIDs of a unique key (single value or list of UIDs, PS3.4 C.2.2.2.2).

    Raises
    ------
    InvalidQueryError
        ``required`` and the key is absent or empty (PS3.4 C.4.2.2.1: the unique keys of
        the retrieve level and above must be present).
    """
    elem = identifier.data_element(keyword) if keyword in identifier else None
    text = element_text(elem) if elem is not None else ""
    uids = [u.strip() for u in text.split("\\") if u.strip()]
    if required and not uids:
        raise InvalidQueryError(f"{keyword} is required to retrieve at this level")
    return uids
