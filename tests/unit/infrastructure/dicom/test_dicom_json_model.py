"""DICOM JSON Model (PS3.18 Annex F): the fast converter must agree with pydicom's.

``normalise`` removes the differences that are deliberate (documented in json_model.py):
pydicom keeps Group Length, empty PN groups, "" for empty values and trailing spaces inside
multi-valued CS, and sends small binary values inline; we send every binary value as bulk
data. Everything else must be equal.
"""

from __future__ import annotations

import copy
import io
import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cloudfilm.infrastructure.dicom.json_model import (
    bulk_element,
    dataset_to_json_bytes,
    dataset_to_json_dict,
)

BASE = "{{BASE}}/studies/1/series/2/instances/3"
SHARED = Path(__file__).resolve().parents[5] / "shared" / "testdata" / "dicom"

# Bundled with pydicom (always present), covering explicit/implicit/big endian, deflate,
# private tags, nested sequences, ISO 2022 and GB18030/UTF-8 names, multi-frame, waveforms.
BUNDLED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "examples_palette.dcm",
    "SC_rgb_rle_2frame.dcm",
]
CHARSET_FILES = ["chrX1.dcm", "chrX2.dcm", "chrH31.dcm", "chrI2.dcm", "chrSQEncoding.dcm"]
# From the pydicom-data package (a dev dependency): skipped when it is not installed.
EXTERNAL = ["emri_small.dcm", "liver.dcm", "US1_J2KR.dcm"]


def _path(name: str) -> str:
    if name.startswith("chr"):
        return str(get_charset_files(name)[0])
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not available (pydicom-data not installed)")
    return str(path)


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, attr in doc.items():
        if key.endswith("0000"):
            continue  # Group Length: pydicom keeps it, PS3.18 F.2.2 excludes it
        attr = dict(attr)
        vr = attr["vr"]
        if attr.pop("InlineBinary", None) is not None or attr.pop("BulkDataURI", None):
            attr["bulk"] = True
        if "Value" in attr:
            values = attr["Value"]
            if vr == "SQ":
                values = [normalise(item) for item in values]
            elif vr == "PN":
                values = [
                    ({k: v for k, v in pn.items() if v} or None) if isinstance(pn, dict) else pn
                    for pn in values
                ]
            else:
                values = [v.strip() if isinstance(v, str) else v for v in values]
                values = [None if v == "" else v for v in values]
            if vr != "SQ" and all(v is None for v in values):
                attr.pop("Value")
            else:
                attr["Value"] = values
        out[key] = attr
    return out


def assert_same(ours: dict[str, Any], theirs: dict[str, Any], path: str = "") -> None:
    ours, theirs = normalise(ours), normalise(theirs)
    assert sorted(ours) == sorted(theirs), path
    for key in ours:
        a, b = ours[key], theirs[key]
        if a.get("bulk") or b.get("bulk"):
            assert (a["vr"], a.get("bulk")) == (b["vr"], True), f"{path}{key}"
        elif a["vr"] == "SQ":
            assert b["vr"] == "SQ" and len(a.get("Value", [])) == len(b.get("Value", []))
            for i, (x, y) in enumerate(zip(a.get("Value", []), b.get("Value", []), strict=True)):
                assert_same(x, y, f"{path}{key}/{i}/")
        else:
            assert a == b, f"{path}{key}"


def _pydicom_json(path: str, **kwargs: Any) -> dict[str, Any]:
    ds = pydicom.dcmread(path, **kwargs)
    result: dict[str, Any] = ds.to_json_dict(1024, lambda elem: "bulk")
    return result


@pytest.mark.parametrize("name", BUNDLED + CHARSET_FILES + EXTERNAL)
@pytest.mark.parametrize("stop_before_pixels", [True, False])
def test_equal_to_pydicom(name: str, stop_before_pixels: bool) -> None:
    path = _path(name)
    ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert_same(ours, _pydicom_json(path, stop_before_pixels=stop_before_pixels))


@pytest.mark.parametrize("name", ["CT_small.dcm", "test-SR.dcm", "chrX2.dcm", "rtplan.dcm"])
def test_equal_to_pydicom_when_elements_are_already_converted(name: str) -> None:
    path = _path(name)
    ds = pydicom.dcmread(path)
    for _ in ds.iterall():  # converts every raw element, as an earlier access would
        pass
    assert_same(dataset_to_json_dict(ds, bulk_base=BASE), _pydicom_json(path))


def test_output_is_sorted_and_has_no_group_length() -> None:
    ds = pydicom.dcmread(_path("CT_small.dcm"))
    ds[0x00080000] = DataElement(0x00080000, "UL", 100)
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert list(ours) == sorted(ours)
    assert "00080000" not in ours
    assert "00091001" in ours  # private attributes are kept
    assert ours["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}


def test_pixel_data_and_binary_values_are_bulk_data() -> None:
    full = dataset_to_json_dict(pydicom.dcmread(_path("CT_small.dcm")), bulk_base=BASE)
    assert full["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{BASE}/bulkdata/7FE00010"}
    header = pydicom.dcmread(_path("CT_small.dcm"), stop_before_pixels=True)
    assert "7FE00010" not in dataset_to_json_dict(header, bulk_base=BASE)
    with_pixels = dataset_to_json_dict(header, bulk_base=BASE, has_pixel_data=True)
    assert with_pixels["7FE00010"] == full["7FE00010"]
    assert list(with_pixels) == sorted(with_pixels)
    # Compressed: OB, whatever Bits Allocated says.
    j2k = pydicom.dcmread(_path("JPEG2000.dcm"), stop_before_pixels=True)
    j2k_json = dataset_to_json_dict(j2k, bulk_base=BASE, has_pixel_data=True)
    assert j2k_json["7FE00010"]["vr"] == "OB"
    # Small binary values are bulk data too (pydicom would inline them).
    ds = _raw_dataset([(0x00091010, "OB", b"\x01\x02"), (0x00282000, "OB", b"")])
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert ours["00091010"] == {"vr": "OB", "BulkDataURI": f"{BASE}/bulkdata/00091010"}
    assert ours["00282000"] == {"vr": "OB"}


def _raw_dataset(elements: list[tuple[int, str | None, bytes]], *, little: bool = True) -> Dataset:
    """A dataset of RawDataElements, as dcmread leaves them before any access."""
    ds = Dataset()
    for tag, vr, value in elements:
        implicit = vr is None
        ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, implicit, little)
    return ds


def test_values_by_vr() -> None:
    ds = _raw_dataset(
        [
            (0x00080005, "CS", b"ISO_IR 192"),
            (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\\\AXIAL "),
            (0x00080020, "DA", b"20240102"),
            (0x00100010, "PN", "Wang^XiaoDong=王^小东=".encode()),
            (0x00101010, "AS", b"045Y"),
            (0x00181050, "DS", b" 0.5\\1e2 \\"),
            (0x00200013, "IS", b"12 "),
            (0x00280030, "DS", b"0.661468\x00"),
            (0x00280010, "US", struct.pack("<H", 512)),
            (0x00281052, "DS", b"-1024"),
            (0x00209165, "AT", struct.pack("<HHHH", 0x0020, 0x9056, 0x0020, 0x9057)),
            (0x00189219, "SS", struct.pack("<3h", -1, 0, 1)),
            (0x00189087, "FD", struct.pack("<d", 1.5)),
            (0x00181060, "DS", b""),
            (0x00081030, "LO", b"Chest^CT  "),
            (0x00204000, "LT", b"line 1\r\nline\\2  "),
            (0x00081190, "UR", b"http://x/y "),
            (0x00080081, "ST", b"   "),
        ]
    )
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert ours["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", None, "AXIAL"]
    assert ours["00080020"] == {"vr": "DA", "Value": ["20240102"]}
    assert ours["00100010"]["Value"] == [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}]
    assert ours["00181050"]["Value"] == [0.5, 100.0, None]
    assert ours["00200013"]["Value"] == [12]
    assert ours["00280030"]["Value"] == [0.661468]
    assert ours["00280010"]["Value"] == [512]
    assert ours["00281052"]["Value"] == [-1024.0]
    assert ours["00209165"]["Value"] == ["00209056", "00209057"]
    assert ours["00189219"]["Value"] == [-1, 0, 1]
    assert ours["00189087"]["Value"] == [1.5]
    assert ours["00181060"] == {"vr": "DS"}
    assert ours["00081030"]["Value"] == ["Chest^CT"]
    assert ours["00204000"]["Value"] == ["line 1\r\nline\\2"]
    assert ours["00081190"]["Value"] == ["http://x/y"]
    assert ours["00080081"] == {"vr": "ST"}


def test_big_endian_numbers() -> None:
    ds = _raw_dataset(
        [(0x00280010, "US", struct.pack(">H", 512)), (0x00189219, "SL", struct.pack(">2i", -5, 7))],
        little=False,
    )
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert ours["00280010"]["Value"] == [512]
    assert ours["00189219"]["Value"] == [-5, 7]


def test_invalid_numbers_are_kept_as_strings_and_do_not_crash() -> None:
    ds = _raw_dataset(
        [
            (0x00200013, "IS", b"1A"),
            (0x00200012, "IS", b"3.0"),
            (0x00181050, "DS", b"0,5\\1.5"),
            (0x00181060, "DS", b"NaN"),
            (0x00280010, "US", b"\x01\x02\x03"),  # 3 bytes: not a US value
        ]
    )
    warnings: list[str] = []
    ours = dataset_to_json_dict(ds, bulk_base=BASE, warnings=warnings)
    assert ours["00200013"] == {"vr": "IS", "Value": ["1A"]}
    assert ours["00200012"] == {"vr": "IS", "Value": [3]}
    assert ours["00181050"] == {"vr": "DS", "Value": ["0,5", 1.5]}
    assert ours["00181060"] == {"vr": "DS", "Value": ["NaN"]}
    assert ours["00280010"] == {"vr": "UN", "BulkDataURI": f"{BASE}/bulkdata/00280010"}
    assert warnings == ["(00280010) US value not readable: US length 3 is not a multiple of 2"]
    orjson.dumps(ours)  # still valid JSON


def test_invalid_numbers_in_a_real_file() -> None:
    path = SHARED / "malformed" / "badVR.dcm"
    if not path.is_file():
        pytest.skip("shared test data folder not present")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert "1A" in ours["00280008"]["Value"]  # pydicom's to_json_dict raises here


def test_threshold_applies_to_vrs_that_may_be_bulk_data() -> None:
    long_text = b"x" * 2000
    ds = _raw_dataset(
        [
            (0x00204000, "LT", long_text),
            (0x00081030, "LO", b"\\".join([b"y" * 60] * 20)),  # 1219 bytes, LO stays inline
            (0x00189219, "FD", struct.pack("<200d", *range(200))),  # 1600 bytes
        ]
    )
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert ours["00204000"] == {"vr": "LT", "BulkDataURI": f"{BASE}/bulkdata/00204000"}
    assert len(ours["00081030"]["Value"]) == 20
    assert "BulkDataURI" in ours["00189219"]
    bigger = dataset_to_json_dict(ds, bulk_base=BASE, bulk_threshold=4096)
    assert bigger["00204000"]["Value"] == ["x" * 2000]
    assert bigger["00189219"]["Value"] == [float(i) for i in range(200)]


def test_nested_bulk_data_paths_resolve() -> None:
    ds = pydicom.dcmread(_path("waveform_ecg.dcm"))
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    waveform = ours["54000100"]["Value"][0]["54001010"]
    assert waveform == {"vr": "OW", "BulkDataURI": f"{BASE}/bulkdata/54000100/0/54001010"}
    path = waveform["BulkDataURI"].split("/bulkdata/", 1)[1]
    elem = bulk_element(ds, path)
    assert elem is not None and elem.tag == 0x54001010
    assert elem.value == ds.WaveformSequence[0].WaveformData
    assert bulk_element(ds, "7FE00010") is None  # no pixel data in an ECG
    for bad in ("", "zz", "54000100/9/54001010", "54000100/0", "00100010/0/00100010"):
        assert bulk_element(ds, bad) is None


def test_ir58_and_mislabelled_names_with_warnings() -> None:
    ir58 = _raw_dataset(
        [
            (0x00080005, "CS", b"\\ISO 2022 IR 58"),
            (0x00100010, "PN", b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="),
        ]
    )
    ours = dataset_to_json_dict(ir58, bulk_base=BASE)
    assert ours["00100010"]["Value"] == [{"Alphabetic": "Zhang^XiaoDong", "Ideographic": "张^小东"}]
    mislabelled = _raw_dataset(
        [
            (0x00080005, "CS", b"ISO_IR 100"),
            (0x00100010, "PN", "Wang^XiaoDong=王^小东".encode("gb18030")),
            (0x00081030, "LO", "胸部平扫".encode("gb18030")),
        ]
    )
    warnings: list[str] = []
    ours = dataset_to_json_dict(mislabelled, bulk_base=BASE, warnings=warnings)
    assert ours["00100010"]["Value"][0]["Ideographic"] == "王^小东"
    assert ours["00081030"]["Value"] == ["胸部平扫"]
    assert warnings == ["non-ASCII bytes labelled ISO_IR 100 read as GB18030"]  # once


def test_sequence_items_inherit_or_override_the_character_set() -> None:
    item_own = Dataset()
    item_own[0x00080005] = RawDataElement(Tag(0x00080005), "CS", 8, b"GB18030 ", 0, False, True)
    name = "=王^小东".encode("gb18030")
    item_own[0x00100010] = RawDataElement(Tag(0x00100010), "PN", len(name), name, 0, False, True)
    item_inherit = Dataset()
    utf8 = "=李^雷".encode()
    item_inherit[0x00100010] = RawDataElement(
        Tag(0x00100010), "PN", len(utf8), utf8, 0, False, True
    )
    ds = _raw_dataset([(0x00080005, "CS", b"ISO_IR 192")])
    ds[0x00101002] = DataElement(0x00101002, "SQ", Sequence([item_own, item_inherit]))
    items = dataset_to_json_dict(ds, bulk_base=BASE)["00101002"]["Value"]
    assert items[0]["00100010"]["Value"] == [{"Ideographic": "王^小东"}]
    assert items[1]["00100010"]["Value"] == [{"Ideographic": "李^雷"}]


def test_implicit_vr_private_tags_use_the_private_dictionary() -> None:
    ds = pydicom.dcmread(_path("MR_small.dcm"), stop_before_pixels=True)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    implicit = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert implicit.get_item(0x00100010).VR is None  # really implicit, not yet converted
    assert_same(
        dataset_to_json_dict(implicit, bulk_base=BASE),
        pydicom.dcmread(io.BytesIO(buffer.getvalue())).to_json_dict(1024, lambda e: "b"),
    )


def test_json_bytes_and_the_dataset_is_not_changed() -> None:
    ds = pydicom.dcmread(_path("CT_small.dcm"), stop_before_pixels=True)
    before = copy.deepcopy(ds)
    doc = dataset_to_json_bytes(ds, bulk_base=BASE, has_pixel_data=True)
    assert orjson.loads(doc) == dataset_to_json_dict(ds, bulk_base=BASE, has_pixel_data=True)
    assert ds == before


def test_created_datasets_work_too() -> None:
    ds = Dataset()
    ds.PatientName = "Li^Lei"
    ds.PatientID = "123"
    ds.ImagePositionPatient = [0, "1.5", -2]
    ds.InstanceNumber = 7
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ours = dataset_to_json_dict(ds, bulk_base=BASE)
    assert ours["00100010"]["Value"] == [{"Alphabetic": "Li^Lei"}]
    assert ours["00200032"]["Value"] == [0.0, 1.5, -2.0]
    assert ours["00200013"]["Value"] == [7]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared test data folder not present")
@pytest.mark.parametrize(
    "relative",
    [
        "ct/SignedCT.dcm",
        "multiframe/MOVEKNEE_enhancedMR_19f.dcm",
        "reports/comprehensive_SR_nested.dcm",
        "malformed/UN_sequence.dcm",
        "malformed/bad_sequence.dcm",
        "malformed/explicit_VR-UN.dcm",
        "studies/tcia_lctsc_ct_rtstruct/RT.dcm",
    ],
)
def test_equal_to_pydicom_on_shared_files(relative: str) -> None:
    path = str(SHARED / relative)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert_same(
        dataset_to_json_dict(ds, bulk_base=BASE),
        _pydicom_json(path, stop_before_pixels=True),
    )


def test_faster_than_pydicom_on_a_ct_header() -> None:
    # A regression guard, not the benchmark: measured ~0.4 ms against ~5 ms (module doc).
    data = Path(_path("CT_small.dcm")).read_bytes()
    headers = [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for _ in range(40)]

    def best(convert: Any, datasets: list[Dataset]) -> float:
        times = []
        for ds in datasets:
            start = time.perf_counter()
            convert(ds)
            times.append(time.perf_counter() - start)
        return min(times)

    ours = best(lambda ds: dataset_to_json_dict(ds, bulk_base=BASE), headers[:20])
    theirs = best(lambda ds: ds.to_json_dict(1024, lambda e: "b"), headers[20:])
    assert ours * 3 < theirs, (ours, theirs)
