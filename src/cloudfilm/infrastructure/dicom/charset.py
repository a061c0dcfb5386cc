"""Decoding of DICOM text (person names first) in the character sets met in Chinese hospitals.

Decoding here is strict and never raises: bytes that do not fit the declared Specific Character
Set are either re-read with the character set they evidently use (GB18030 or UTF-8 labelled as
ISO_IR 100 or not labelled at all, a frequent real-world defect) or replaced, and in both cases
a warning is returned to the caller, who records it on the instance next to the raw bytes.

Why not ``pydicom.charset.decode_bytes``: it reports undecodable bytes through the process-wide
``pydicom.config.settings.reading_validation_mode`` (a warning or an exception, depending on a
global that must not be toggled per request, see STYLE.md section 11), and with
``ISO 2022 IR 58`` it keeps the ``ESC $ ) A`` escape sequences in the decoded text (pydicom
3.0.2 hands the escape to the ``gb2312`` codec, which does not know it). This module reuses
pydicom's tables (term to codec via :func:`pydicom.charset.convert_encodings`, escape sequence
to codec via ``pydicom.charset.CODES_TO_ENCODINGS``) and its fragment splitting, and the unit
tests check that the output equals ``decode_bytes`` on every sample where pydicom is right.

References
----------
PS3.3 C.12.1.1.2 (Specific Character Set), PS3.5 6.1 (character repertoires and code
extensions), PS3.5 6.2 (PN), PS3.5 Annex J (ISO_IR 192, GB18030 examples) and Annex K
(ISO 2022 IR 58 examples).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydicom.charset import CODES_TO_ENCODINGS, STAND_ALONE_ENCODINGS, convert_encodings
from pydicom.charset import python_encoding as _PYDICOM_TERMS

__all__ = [
    "NameGroup",
    "PersonName",
    "decode_person_name",
    "decode_text",
    "name_search_keys",
    "split_person_name",
]

_ESC = b"\x1b"
# Same split as pydicom.charset.decode_bytes: the text before the first ESC, then one fragment
# per escape sequence (PS3.5 6.1.2.5).
_FRAGMENTS_RE = re.compile(b"(^[^\x1b]+|\x1b[^\x1b]*)")
# Characters at which the character set of Specific Character Set value 1 is active again
# (PS3.5 6.1.2.5.3): CR, LF, TAB, FF, the value delimiter "\" and, in PN, "^" and "=".
_TEXT_DELIMITERS = frozenset(b"\r\n\t\f\\")
_PN_DELIMITERS = _TEXT_DELIMITERS | frozenset(b"^=")
# Codecs that interpret the ISO 2022 escape sequences themselves (as in pydicom).
_SELF_ESCAPING = frozenset({"iso2022_jp", "iso2022_jp_2"})
# Multi-byte G1 sets whose designation real-world encoders often forget to repeat after "^".
_MULTIBYTE_G1 = frozenset({"gb18030", "euc_kr"})
_DEFAULT_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
# Spellings seen in the field that are not Defined Terms, mapped to the Defined Term they mean.
_TERM_ALIASES = {
    "UTF-8": "ISO_IR 192",
    "UTF8": "ISO_IR 192",
    "GB2312": "GB18030",  # GB2312 is a subset of GB18030
    "EUC-CN": "GB18030",
    "ISO_IR 58": "GB18030",  # IR 58 without code extensions: GB2312 in GR, i.e. EUC-CN
    "CP936": "GBK",
}
_TERM_FIX_RES = (
    (re.compile(r"^ISO[ _-]?IR[ _-]?(\d+)$"), "ISO_IR {}"),
    (re.compile(r"^ISO[ _-]?2022[ _-]?IR[ _-]?(\d+)$"), "ISO 2022 IR {}"),
)
# A character that would not appear in Chinese text: anything but ASCII, CJK ideographs,
# CJK and general punctuation, the middle dot of transliterated names, full-width forms.
_NOT_CHINESE_RE = re.compile(
    "[^\x00-\x7f\u00b7\u2010-\u206f\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]"
)
_NOT_HANGUL_RE = re.compile("[^\x00-\x7f\uac00-\ud7a3]")
# Latin-1 bytes that are not letters (C1 controls, symbols, x and division sign), or two
# non-ASCII bytes in a row: rare in Western names, the rule in GB-encoded Chinese.
_SUSPICIOUS_LATIN1_RE = re.compile(b"[\x80-\xbf\xd7\xf7]|[\x80-\xff]{2}")


def _canonical(codec: str) -> str:
    name = codecs.lookup(codec).name
    # GBK and GB2312 text is valid GB18030 with the same meaning; one strict superset decoder
    # also reads the GBK extension characters that mislabelled "GB2312" data often carries.
    return "gb18030" if name in ("gbk", "gb2312") else name


@dataclass(frozen=True, slots=True)
class _Charset:
    codecs: tuple[str, ...]  # canonical Python codec names, value 1 first
    default_first: bool  # value 1 absent or ISO_IR 6: the default repertoire (ASCII)
    latin1_first: bool  # value 1 is ISO_IR 100 (or ISO 2022 IR 100)
    warnings: tuple[str, ...]


def _normalise_terms(specific_character_set: str | Sequence[str] | None) -> tuple[str, ...]:
    if specific_character_set is None:
        return ("",)
    if isinstance(specific_character_set, str):
        values = specific_character_set.split("\\")
    else:
        values = [str(v) for v in specific_character_set]
    terms = tuple(v.strip().upper() for v in values)
    return terms or ("",)


def _fix_spelling(term: str) -> str | None:
    for regex, template in _TERM_FIX_RES:
        match = regex.match(term)
        if match:
            return template.format(match.group(1))
    return None


@lru_cache(maxsize=256)
def _charset(terms: tuple[str, ...]) -> _Charset:
    warnings: list[str] = []
    fixed: list[str] = []
    for i, term in enumerate(terms):
        if i == 0 and term in _DEFAULT_TERMS:
            fixed.append("ISO_IR 6")
            continue
        if term in _PYDICOM_TERMS:
            fixed.append(term)
            continue
        candidate = _TERM_ALIASES.get(term) or _fix_spelling(term)
        if candidate is not None and candidate in _PYDICOM_TERMS:
            warnings.append(
                f"Specific Character Set value {term!r} is not a Defined Term; "
                f"read as {candidate!r}"
            )
            fixed.append(candidate)
        elif term:
            warnings.append(
                f"unknown Specific Character Set value {term!r}; read as the default repertoire"
            )
            if i == 0:
                fixed.append("ISO_IR 6")
    if len(fixed) > 1 and fixed[0] in STAND_ALONE_ENCODINGS:
        warnings.append(
            f"Specific Character Set {fixed[0]!r} does not allow code extensions; "
            f"ignoring {', '.join(fixed[1:])}"
        )
        fixed = fixed[:1]
    elif len(fixed) > 1:
        for term in fixed[1:]:
            if term in STAND_ALONE_ENCODINGS:
                warnings.append(f"{term!r} cannot be a code extension; ignoring it")
        fixed = [fixed[0], *(t for t in fixed[1:] if t not in STAND_ALONE_ENCODINGS)]
    # Every term is now one pydicom knows, so convert_encodings does not warn.
    py_codecs = tuple(_canonical(c) for c in convert_encodings(fixed))
    return _Charset(
        codecs=py_codecs,
        default_first=fixed[0] in _DEFAULT_TERMS,
        latin1_first=fixed[0] in ("ISO_IR 100", "ISO 2022 IR 100"),
        warnings=tuple(warnings),
    )


def _strict(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def _replace(raw: bytes, codec: str, label: str, warnings: list[str]) -> str:
    warnings.append(f"bytes not valid in {label}; undecodable bytes replaced with U+FFFD")
    return raw.decode(codec, errors="replace")


def _as_chinese(raw: bytes) -> str | None:
    """Return `raw` decoded as GB18030 if that is valid and reads as Chinese text."""
    text = _strict(raw, "gb18030")
    if text is None or _NOT_CHINESE_RE.search(text):
        return None
    return text


def _is_hangul(raw: bytes) -> bool:
    """Return whether `raw` also reads as EUC-KR Korean (same byte ranges as GB2312)."""
    text = _strict(raw, "euc_kr")
    return text is not None and _NOT_HANGUL_RE.search(text) is None


def _as_utf8(raw: bytes) -> str | None:
    return _strict(raw, "utf-8")


def _decode_plain(raw: bytes, cs: _Charset, warnings: list[str]) -> str:
    """Decode non-ASCII `raw` without escape sequences with value 1 of the character set."""
    codec = cs.codecs[0]
    if cs.default_first or cs.latin1_first:
        label = "ISO_IR 100" if cs.latin1_first else "the default repertoire (ASCII)"
        # Valid multi-byte UTF-8 is practically never Western Latin-1 text.
        text = _as_utf8(raw)
        if text is not None:
            warnings.append(f"non-ASCII bytes labelled {label} are valid UTF-8; read as UTF-8")
            return text
        if _SUSPICIOUS_LATIN1_RE.search(raw):
            text = _as_chinese(raw)
            if text is not None:
                warnings.append(
                    f"non-ASCII bytes labelled {label} read as GB18030"
                    + (" (they are also valid EUC-KR Hangul)" if _is_hangul(raw) else "")
                )
                return text
        if len(cs.codecs) > 1:
            # Code extensions declared but no escape sequence used: try the G1 sets.
            for extension in cs.codecs[1:]:
                if extension in _MULTIBYTE_G1:
                    text = _strict(raw, extension)
                    if text is not None:
                        warnings.append(
                            f"non-ASCII bytes without escape sequence read as {extension}"
                        )
                        return text
        if cs.default_first:
            warnings.append("non-ASCII bytes without Specific Character Set; read as ISO_IR 100")
        elif re.search(b"[\x80-\x9f]", raw):
            warnings.append("C1 control bytes (0x80-0x9F) in ISO_IR 100 text")
        return raw.decode("latin-1")
    text = _strict(raw, codec)
    if text is not None:
        return text
    if codec == "utf-8":
        text = _as_chinese(raw)
        if text is not None:
            warnings.append("bytes labelled ISO_IR 192 are not UTF-8; read as GB18030")
            return text
    elif codec == "gb18030":
        text = _as_utf8(raw)
        if text is not None:
            warnings.append("bytes labelled GB18030/GBK are not GB18030; read as UTF-8")
            return text
    return _replace(raw, codec, codec, warnings)


def _decode_value1(raw: bytes, cs: _Charset, warnings: list[str]) -> str:
    if raw.isascii():
        return raw.decode("ascii")
    return _decode_plain(raw, cs, warnings)


def _decode_iso2022(
    raw: bytes, cs: _Charset, delimiters: frozenset[int], warnings: list[str]
) -> str:
    """Decode `raw` with ISO 2022 code extensions (PS3.5 6.1.2.5)."""
    parts: list[str] = []
    for fragment in _FRAGMENTS_RE.findall(raw):
        if not fragment.startswith(_ESC):
            parts.append(_decode_value1(fragment, cs, warnings))
            continue
        seq_len = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
        py_codec = CODES_TO_ENCODINGS.get(fragment[:seq_len])
        if py_codec is None:
            warnings.append("unknown ISO 2022 escape sequence; decoded with value 1")
            parts.append(_decode_value1(fragment, cs, warnings))
            continue
        if py_codec in _SELF_ESCAPING:
            text = _strict(fragment, py_codec)
            parts.append(
                text if text is not None else _replace(fragment, py_codec, py_codec, warnings)
            )
            continue
        codec = _canonical(py_codec)
        if codec not in cs.codecs and fragment[:seq_len] != b"\x1b(B":
            warnings.append(
                f"escape sequence for {codec}, which Specific Character Set does not list"
            )
        body = fragment[seq_len:]
        # The designated set stays active up to the first delimiter; after it the set of
        # value 1 is active again (PS3.5 6.1.2.5.3).
        cut = next((i for i, byte in enumerate(body) if byte in delimiters), len(body))
        head, tail = body[:cut], body[cut:]
        text = _strict(head, codec)
        parts.append(text if text is not None else _replace(head, codec, codec, warnings))
        if not tail:
            continue
        if cs.default_first and codec in _MULTIBYTE_G1 and not tail.isascii():
            # Seen in the field: "ESC $ ) A <family>^<given>" with the designation not
            # repeated after "^". The bytes are GR bytes of the same set; read them so.
            text = _strict(tail, codec)
            if text is not None:
                warnings.append(
                    f"{codec} designation not repeated after a delimiter; continued in it"
                )
                parts.append(text)
                continue
        parts.append(_decode_value1(tail, cs, warnings))
    return "".join(parts)


def decode_text(
    raw: bytes,
    specific_character_set: str | Sequence[str] | None,
    *,
    vr: str | None = None,
) -> tuple[str, list[str]]:
    """Decode a DICOM text value, returning the text and the warnings; never raises.

    Parameters
    ----------
    raw : bytes
        The encoded value as stored (trailing space and NUL padding is removed). A
        multi-valued element keeps its ``\\`` separators.
    specific_character_set : str, sequence of str or None
        The value of (0008,0005) *Specific Character Set* that applies to the element: a
        list, a backslash-separated string, or ``None``/empty for the default repertoire.
    vr : str, optional
        ``"PN"`` decodes each name group separately (as pydicom does) and drops trailing
        empty groups; other values or ``None`` decode plain text.

    Returns
    -------
    text : str
        The decoded text.
    warnings : list of str
        Why the text may not be what the sender meant: a wrong or unknown character set
        label, a detected mislabel (GB18030 or UTF-8 bytes declared as ISO_IR 100 or not
        declared), replaced bytes. Messages never contain the text itself.

    References
    ----------
    PS3.3 C.12.1.1.2, PS3.5 6.1.2.5 and Annexes J and K
    """
    raw = bytes(raw).rstrip(b"\x00 ")
    cs = _charset(_normalise_terms(specific_character_set))
    warnings = list(cs.warnings)
    if not raw:
        return "", warnings
    if _ESC not in raw:
        # One character set for the whole value (PS3.5 6.1.2.4): decide once, on all bytes.
        text = _decode_value1(raw, cs, warnings)
        if vr == "PN":
            text = "\\".join(value.rstrip("=") for value in text.split("\\"))
        return text, warnings
    if vr == "PN":
        values = []
        for value in raw.split(b"\\"):
            # Each group starts in the initial state, as in pydicom's PersonName.
            groups = [_decode_iso2022(g, cs, _PN_DELIMITERS, warnings) for g in value.split(b"=")]
            while groups and not groups[-1]:
                groups.pop()
            values.append("=".join(groups))
        return "\\".join(values), warnings
    return _decode_iso2022(raw, cs, _TEXT_DELIMITERS, warnings), warnings


@dataclass(frozen=True, slots=True)
class NameGroup:
    """One component group of a person name (PS3.5 6.2.1.1).

    Attributes
    ----------
    text : str
        The whole group as encoded, e.g. ``"Wang^XiaoDong"``.
    family, given, middle, prefix, suffix : str
        The five ``^``-separated components, ``""`` when absent.
    """

    text: str = ""
    family: str = ""
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> NameGroup:
        """Split a group on ``^`` into its components (extra components are kept in suffix)."""
        parts = text.split("^", 4)
        parts += [""] * (5 - len(parts))
        return cls(text, *(p.strip() for p in parts))

    def components(self) -> list[str]:
        """Return the non-empty components in order family, given, middle, prefix, suffix."""
        return [c for c in (self.family, self.given, self.middle, self.prefix, self.suffix) if c]


@dataclass(frozen=True, slots=True)
class PersonName:
    """A decoded person name split into its alphabetic, ideographic and phonetic groups.

    For Chinese patients the alphabetic group is usually pinyin (``Wang^XiaoDong``), the
    ideographic group the characters (``王^小东``), the phonetic group often empty.

    References
    ----------
    PS3.5 6.2.1, PS3.5 Annex J
    """

    alphabetic: NameGroup
    ideographic: NameGroup
    phonetic: NameGroup

    @property
    def groups(self) -> tuple[NameGroup, NameGroup, NameGroup]:
        """The three groups in encoding order."""
        return (self.alphabetic, self.ideographic, self.phonetic)

    def to_json(self) -> dict[str, str]:
        """Return the DICOM JSON form: only the non-empty groups (PS3.18 F.2.2)."""
        out: dict[str, str] = {}
        for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), self.groups, strict=True):
            if group.text:
                out[key] = group.text
        return out


def split_person_name(name: str) -> PersonName:
    """Split a decoded PN value into its three groups and their components.

    Parameters
    ----------
    name : str
        One decoded PN value, e.g. ``"Wang^XiaoDong=王^小东="``. Groups beyond the third are
        ignored; trailing spaces are not significant.

    Returns
    -------
    PersonName
        The groups, each with ``family``, ``given``, ``middle``, ``prefix`` and ``suffix``.

    References
    ----------
    PS3.5 6.2.1
    """
    groups = name.rstrip(" \x00").split("=", 2)
    groups += [""] * (3 - len(groups))
    return PersonName(*(NameGroup.parse(g.rstrip("^ ")) for g in groups))


def decode_person_name(
    raw: bytes, specific_character_set: str | Sequence[str] | None
) -> tuple[PersonName, list[str]]:
    """Decode a single-valued PN element and split it (see :func:`decode_text`).

    Parameters
    ----------
    raw : bytes
        The encoded PN value.
    specific_character_set : str, sequence of str or None
        The applicable (0008,0005) value.

    Returns
    -------
    name : PersonName
        The first value of the element, split into groups.
    warnings : list of str
        The decoding warnings.
    """
    text, warnings = decode_text(raw, specific_character_set, vr="PN")
    return split_person_name(text.split("\\", 1)[0]), warnings


_SEARCH_SPLIT_RE = re.compile(r"[\s=^\\,]+")


def name_search_keys(name: str) -> str:
    """Return the normalised, upper-cased search string of a decoded PN value.

    All components of all groups (alphabetic, ideographic, phonetic) of every value are
    NFKC-normalised (full-width letters become ASCII), upper-cased and joined with single
    spaces. For each group with two or more components the components are also joined
    without a space (``王小东``, ``WANGXIAODONG``): Chinese users type a full name without a
    separator. Duplicates are dropped, first occurrence kept.

    Parameters
    ----------
    name : str
        A decoded PN value, possibly multi-valued (``\\``-separated).

    Returns
    -------
    str
        E.g. ``"WANG XIAODONG WANGXIAODONG 王 小东 王小东"`` for ``"Wang^XiaoDong=王^小东="``;
        match it with ``LIKE '%' || upper(term) || '%'``.
    """
    keys: dict[str, None] = {}
    normalised = unicodedata.normalize("NFKC", name).upper()
    for value in normalised.split("\\"):
        for group in value.split("="):
            components = [c for c in _SEARCH_SPLIT_RE.split(group.replace("^", " ")) if c]
            for component in components:
                keys.setdefault(component, None)
            if len(components) > 1:
                keys.setdefault("".join(components), None)
    return " ".join(keys)
