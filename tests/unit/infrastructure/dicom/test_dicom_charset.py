"""Decoding of person names and text, Chinese character sets first (PS3.5 6.1, Annexes J, K).

The reference outputs are pydicom's (``decode_bytes`` through ``PersonName``) wherever
pydicom is right; ISO 2022 IR 58 is checked against PS3.5 Annex K instead, because pydicom
3.0.2 leaves the escape sequences in the text.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_charset_files

from cloudfilm.infrastructure.dicom.charset import (
    NameGroup,
    PersonName,
    decode_person_name,
    decode_text,
    name_search_keys,
    split_person_name,
)

SHARED_CHARSETS = Path(__file__).resolve().parents[5] / "shared" / "testdata" / "dicom" / "charsets"
TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}

# PS3.5 Annex K example 1: "Zhang^XiaoDong=张^小东=" with ESC $ ) A before each
# ideographic component (GB2312 in G1, GR bytes).
IR58_ZHANG = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
WANG_GB18030 = "Wang^XiaoDong=王^小东=".encode("gb18030")


def _charset_file_names() -> list[str]:
    return sorted(Path(p).name for p in get_charset_files("chr*.dcm"))


def _pydicom_text(elem: pydicom.dataelem.DataElement) -> str:
    value = elem.value
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _ours(raw: bytes, charset: object, vr: str) -> str:
    text, _ = decode_text(raw, charset, vr=vr)  # type: ignore[arg-type]
    return "\\".join(v.rstrip(" ") for v in text.split("\\"))


# -- pydicom's bundled charset files (PS3.5 Annex H/I/J examples) ------------------------------


@pytest.mark.parametrize("name", _charset_file_names())
def test_text_elements_match_pydicom(name: str) -> None:
    path = get_charset_files(name)[0]
    raw_ds = pydicom.dcmread(path)
    ref_ds = pydicom.dcmread(path)
    charset = raw_ds.get("SpecificCharacterSet")
    checked = 0
    for tag in list(raw_ds.keys()):
        raw = raw_ds.get_item(tag)
        vr = raw.VR
        if vr not in TEXT_VRS or not raw.value:
            continue
        _, problems = decode_text(raw.value, charset, vr=vr)
        assert problems == []
        assert _ours(raw.value, charset, vr) == _pydicom_text(ref_ds[tag]), hex(tag)
        checked += 1
    assert checked > 0


def test_chinese_utf8_example_chrx1() -> None:
    ds = pydicom.dcmread(get_charset_files("chrX1.dcm")[0])
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    name, problems = decode_person_name(ds.get_item(0x00100010).value, ds.SpecificCharacterSet)
    assert problems == []
    assert name.alphabetic.family == "Wang"
    assert name.alphabetic.given == "XiaoDong"
    assert name.ideographic.text == "王^小東"
    assert name.ideographic.family == "王"
    assert name.ideographic.given == "小東"
    assert name.phonetic == NameGroup()


def test_chinese_gb18030_example_chrx2() -> None:
    ds = pydicom.dcmread(get_charset_files("chrX2.dcm")[0])
    assert ds.SpecificCharacterSet == "GB18030"
    text, problems = decode_text(ds.get_item(0x00100010).value, ds.SpecificCharacterSet, vr="PN")
    assert (text, problems) == ("Wang^XiaoDong=王^小东", [])


@pytest.mark.parametrize("name", ["chrSQEncoding.dcm", "chrSQEncoding1.dcm"])
def test_sequence_item_character_set_own_or_inherited_matches_pydicom(name: str) -> None:
    # chrSQEncoding: dataset ISO_IR 192, item ISO 2022 IR 13 / IR 87 (Japanese);
    # chrSQEncoding1: the item has none and inherits the dataset's (PS3.5 7.5.3).
    ds = pydicom.dcmread(get_charset_files(name)[0])
    item = ds[0x00321064].value[0]
    charset = item.get("SpecificCharacterSet") or ds.get("SpecificCharacterSet")
    raw = item.get_item(0x00100010).value
    text = _ours(raw, charset, "PN")
    assert "\x1b" not in text
    assert text == str(item.PatientName)


# -- generated Part 10 files with bytes we encode ourselves ------------------------------------


def _element(tag: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    group, element = tag >> 16, tag & 0xFFFF
    if vr in {"OB", "OW", "SQ", "UN", "UT", "UC", "UR"}:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _part10(elements: list[tuple[int, str, bytes]]) -> bytes:
    """Explicit VR little endian Part 10 file holding exactly the given element bytes."""
    sop_class = b"1.2.840.10008.5.1.4.1.1.7"
    sop_instance = b"2.25.1234567890"
    meta = (
        _element(0x00020001, "OB", b"\x00\x01")
        + _element(0x00020002, "UI", sop_class)
        + _element(0x00020003, "UI", sop_instance)
        + _element(0x00020010, "UI", b"1.2.840.10008.1.2.1")
    )
    meta = _element(0x00020000, "UL", struct.pack("<I", len(meta))) + meta
    body = [
        (0x00080016, "UI", sop_class),
        (0x00080018, "UI", sop_instance),
        (0x00100020, "LO", b"P1"),
        *elements,
    ]
    return b"\x00" * 128 + b"DICM" + meta + b"".join(_element(*e) for e in sorted(body))


def _read(elements: list[tuple[int, str, bytes]]) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(_part10(elements)))


def test_generated_gb18030_file() -> None:
    ds = _read([(0x00080005, "CS", b"GB18030"), (0x00100010, "PN", WANG_GB18030)])
    raw = ds.get_item(0x00100010).value
    assert raw.rstrip(b" ") == WANG_GB18030
    name, problems = decode_person_name(raw, ds.get("SpecificCharacterSet"))
    assert problems == []
    assert (name.ideographic.family, name.ideographic.given) == ("王", "小东")
    assert (name.alphabetic.family, name.alphabetic.given) == ("Wang", "XiaoDong")
    assert "王小东" in name_search_keys(str(ds.PatientName)).split()


def test_generated_iso2022_ir58_file_per_annex_k() -> None:
    ds = _read(
        [
            (0x00080005, "CS", b"\\ISO 2022 IR 58"),
            (0x00100010, "PN", IR58_ZHANG),
            (0x00081030, "LO", b"\x1b$)A" + "胸部".encode("gb2312") + b" CT"),
        ]
    )
    charset = ds.get("SpecificCharacterSet")
    assert list(charset) == ["", "ISO 2022 IR 58"]
    name_text, problems = decode_text(ds.get_item(0x00100010).value, charset, vr="PN")
    assert (name_text, problems) == ("Zhang^XiaoDong=张^小东", [])
    description, problems = decode_text(ds.get_item(0x00081030).value, charset)
    assert (description, problems) == ("胸部 CT", [])
    # Why we decode ourselves: pydicom 3.0.2 keeps the escape sequence in the text. When
    # this assertion fails, pydicom has been fixed and charset.py can hand IR 58 back to it.
    assert "\x1b" in str(ds.PatientName)


def test_ir58_in_the_ideographic_group_only_and_mixed_with_ascii() -> None:
    raw = b"Wang^XiaoDong=\x1b$)A" + "王".encode("gb2312") + b"^\x1b$)A" + "小东".encode("gb2312")
    assert decode_text(raw, ["", "ISO 2022 IR 58"], vr="PN") == ("Wang^XiaoDong=王^小东", [])
    assert decode_text(raw, "\\ISO 2022 IR 58", vr="PN")[0] == "Wang^XiaoDong=王^小东"


def test_ir58_designation_not_repeated_after_caret_is_read_with_a_warning() -> None:
    raw = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\xd0\xa1\xb6\xab="
    text, problems = decode_text(raw, ["", "ISO 2022 IR 58"], vr="PN")
    assert text == "Zhang^XiaoDong=张^小东"
    assert len(problems) == 1 and "not repeated" in problems[0]


def test_ir58_strict_twin_value1_bytes_are_not_guessed_when_valid() -> None:
    # After "^" the value 1 set (ASCII) applies again: plain ASCII stays ASCII, no warning.
    raw = b"\x1b$)A\xd5\xc5^Xiao"
    assert decode_text(raw, ["", "ISO 2022 IR 58"], vr="PN") == ("张^Xiao", [])


# -- mislabelled data ---------------------------------------------------------------------------


@pytest.mark.parametrize("label", [None, "", [""], "ISO_IR 100", ["ISO_IR 100"], "ISO_IR 6"])
def test_gb18030_bytes_mislabelled_are_read_as_gb18030_with_a_warning(label: object) -> None:
    text, problems = decode_text(WANG_GB18030, label, vr="PN")  # type: ignore[arg-type]
    assert text == "Wang^XiaoDong=王^小东"
    assert len(problems) == 1 and "GB18030" in problems[0]


def test_gbk_name_with_a_low_trail_byte_is_detected() -> None:
    # 玥 is 0xAB 0x68 in GBK: its trail byte is ASCII "h".
    raw = "王玥".encode("gbk")
    assert decode_text(raw, None, vr="PN")[0] == "王玥"


def test_utf8_bytes_labelled_latin1_are_read_as_utf8_with_a_warning() -> None:
    text, problems = decode_text("Wang^XiaoDong=王^小东".encode(), "ISO_IR 100", vr="PN")
    assert text == "Wang^XiaoDong=王^小东"
    assert len(problems) == 1 and "UTF-8" in problems[0]


def test_gb18030_bytes_labelled_utf8_are_read_as_gb18030_with_a_warning() -> None:
    text, problems = decode_text(WANG_GB18030, "ISO_IR 192", vr="PN")
    assert text == "Wang^XiaoDong=王^小东"
    assert problems and "GB18030" in problems[0]


@pytest.mark.parametrize(
    "name", ["Buc^Jérôme", "Äneas^Rüdiger", "Müller^Zoë", "François^Núñez", "Øyvind^Åsa"]
)
def test_strict_twin_real_latin1_stays_latin1_without_warning(name: str) -> None:
    assert decode_text(name.encode("latin-1"), "ISO_IR 100", vr="PN") == (name, [])


def test_latin1_without_character_set_is_read_as_latin1_with_a_warning() -> None:
    text, problems = decode_text("Äneas^Rüdiger".encode("latin-1"), None, vr="PN")
    assert text == "Äneas^Rüdiger"
    assert len(problems) == 1 and "ISO_IR 100" in problems[0]


def test_undecodable_bytes_are_replaced_with_a_warning() -> None:
    text, problems = decode_text(b"Li^\xff\xfe", "ISO_IR 192", vr="PN")
    assert text.startswith("Li^") and "\ufffd" in text
    assert any("replaced" in p for p in problems)


@pytest.mark.parametrize(
    ("label", "expected"),
    [("ISO_IR100", "ISO_IR 100"), ("ISO-IR 100", "ISO_IR 100"), ("GB2312", "GB18030")],
)
def test_misspelled_terms_are_corrected_with_a_warning(label: str, expected: str) -> None:
    text, problems = decode_text("Jérôme".encode("latin-1"), label)
    if expected == "ISO_IR 100":
        assert text == "Jérôme"
    assert any("not a Defined Term" in p and expected in p for p in problems)


def test_unknown_term_warns_and_reads_the_default_repertoire() -> None:
    assert decode_text(b"Smith^John", "KLINGON") == (
        "Smith^John",
        ["unknown Specific Character Set value 'KLINGON'; read as the default repertoire"],
    )


def test_stand_alone_character_set_with_extensions_warns() -> None:
    text, problems = decode_text(WANG_GB18030, ["GB18030", "ISO 2022 IR 58"], vr="PN")
    assert text == "Wang^XiaoDong=王^小东"
    assert any("does not allow code extensions" in p for p in problems)


def test_warnings_never_contain_the_text() -> None:
    _, problems = decode_text(WANG_GB18030, "ISO_IR 100", vr="PN")
    assert problems and not any("Wang" in p or "王" in p for p in problems)


def test_padding_and_empty_values() -> None:
    assert decode_text(b"", "GB18030") == ("", [])
    assert decode_text(b"  \x00", None) == ("", [])
    assert decode_text(b"ABC \x00", None) == ("ABC", [])
    assert decode_text(b"A^B=^=", None, vr="PN") == ("A^B=^", [])


def test_no_global_state_is_touched_and_no_python_warnings() -> None:
    mode = pydicom.config.settings.reading_validation_mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_text(b"\xff\xfe", "ISO_IR 192")
        decode_text(IR58_ZHANG, ["", "ISO 2022 IR 58"], vr="PN")
        decode_text(b"x", "NONSENSE")
    assert pydicom.config.settings.reading_validation_mode == mode


CHARSETS = [
    None,
    "ISO_IR 100",
    "ISO_IR 192",
    "GB18030",
    "GBK",
    ["", "ISO 2022 IR 58"],
    ["", "ISO 2022 IR 87"],
    ["ISO 2022 IR 13", "ISO 2022 IR 87"],
    ["", "ISO 2022 IR 149"],
    "ISO_IR 144",
    "NONSENSE",
]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=48), charset=st.sampled_from(CHARSETS), pn=st.booleans())
def test_decode_never_raises(raw: bytes, charset: object, pn: bool) -> None:
    text, problems = decode_text(raw, charset, vr="PN" if pn else None)  # type: ignore[arg-type]
    assert isinstance(text, str)
    assert all(isinstance(p, str) for p in problems)


# -- person name structure and search keys -----------------------------------------------------


def test_split_person_name() -> None:
    name = split_person_name("Wang^XiaoDong=王^小东=")
    assert name == PersonName(
        alphabetic=NameGroup("Wang^XiaoDong", "Wang", "XiaoDong"),
        ideographic=NameGroup("王^小东", "王", "小东"),
        phonetic=NameGroup(),
    )
    assert name.to_json() == {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}


def test_split_person_name_all_components_and_edge_cases() -> None:
    full = split_person_name("Adams^John Robert Quincy^Q^Rev.^B.A. M.Div.")
    assert full.alphabetic.family == "Adams"
    assert full.alphabetic.given == "John Robert Quincy"
    assert full.alphabetic.middle == "Q"
    assert full.alphabetic.prefix == "Rev."
    assert full.alphabetic.suffix == "B.A. M.Div."
    assert split_person_name("") == PersonName(NameGroup(), NameGroup(), NameGroup())
    only_ideographic = split_person_name("=王^小东")
    assert only_ideographic.alphabetic == NameGroup()
    assert only_ideographic.ideographic.family == "王"
    assert only_ideographic.to_json() == {"Ideographic": "王^小东"}
    assert split_person_name("Wang^^  ").alphabetic.text == "Wang"
    assert split_person_name("A=B=C=D").phonetic.text == "C=D"


def test_name_search_keys() -> None:
    assert name_search_keys("Wang^XiaoDong=王^小东=") == "WANG XIAODONG WANGXIAODONG 王 小东 王小东"
    assert name_search_keys("") == ""
    assert name_search_keys("Ｗａｎｇ^ｘｉａｏ dong") == "WANG XIAO DONG WANGXIAODONG"
    assert name_search_keys("Li^Lei\\Han^Meimei") == "LI LEI LILEI HAN MEIMEI HANMEIMEI"
    assert name_search_keys("=张^三") == "张 三 张三"
    assert name_search_keys("Wang^XiaoDong=王^小东").upper() == name_search_keys(
        "wang^xiaodong=王^小东"
    )


# -- shared real files, when the folder is there -----------------------------------------------


def _shared_files() -> list[Path]:
    if not SHARED_CHARSETS.is_dir():
        return []
    return sorted(SHARED_CHARSETS.glob("chr*.dcm"))


@pytest.mark.skipif(not SHARED_CHARSETS.is_dir(), reason="shared test data folder not present")
@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: p.name)
def test_shared_charset_files_names_match_pydicom(path: Path) -> None:
    ds = pydicom.dcmread(path)
    raw = ds.get_item(0x00100010)
    if raw is None:
        pytest.skip("no PatientName at the top level")
    text, problems = decode_text(raw.value, ds.get("SpecificCharacterSet"), vr="PN")
    assert problems == []
    assert text == _pydicom_text(pydicom.dcmread(path)[0x00100010])
    if path.name in ("chrX1.dcm", "chrX2.dcm"):
        assert split_person_name(text).ideographic.family == "王"
