"""De-identification: every image of pydicom's test files and of the shared set, checked
element by element (sequences included) for surviving names, IDs, dates, UIDs and private
values; pseudonym consistency; burned-in decisions; report text."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from tests.conftest import SHARED_TESTDATA

from cloudfilm.infrastructure.deid import (
    BurnedInDecision,
    DeidOptions,
    Pseudonymiser,
    Region,
    deidentify,
    deidentify_text,
    residual_risk,
)
from cloudfilm.infrastructure.deid.profile import annex_e_table, burned_in_risk
from cloudfilm.infrastructure.deid.text import resident_id_valid

OPTIONS = DeidOptions(retain_modified_dates=True, retain_patient_characteristics=True,
                      clean_descriptors=True, clean_structured_content=True, age_band_years=10)
# Identifying by their meaning although their VR says nothing (LO/SH/CS ids and places).
_ID_KEYWORDS = {"PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "InstitutionName",
                "InstitutionAddress", "StationName", "IssuerOfPatientID", "DeviceSerialNumber",
                "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
                "InstitutionalDepartmentName", "PatientAddress", "PatientTelephoneNumbers",
                "MedicalRecordLocator", "AdmissionID", "FillerOrderNumberImagingServiceRequest",
                "PlacerOrderNumberImagingServiceRequest"}


def _elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _elements(item)


def _values(elem: pydicom.DataElement) -> list[str]:
    if elem.value is None or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
        return []
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v).strip() for v in values if str(v).strip()]


def _identifying(ds: Dataset) -> set[str]:
    found: set[str] = set()
    # A value that repeats a kept, non-identifying one (a private copy of the model name, an
    # institution called like its scanner's maker) is as safe as its public twin.
    public = {v for e in _elements(ds)
              if not e.tag.is_private and e.VR not in ("PN", "DA", "DT", "UI")
              and e.keyword not in _ID_KEYWORDS for v in _values(e)}
    for elem in _elements(ds):
        vals = _values(elem)
        if elem.VR == "PN" or elem.VR in ("DA", "DT"):
            # 19000101 is the profile's own dummy date (and some files' placeholder).
            found.update(v for v in vals if len(v) >= 4 and not v.startswith("19000101"))
        elif elem.keyword in _ID_KEYWORDS:
            found.update(v for v in vals if len(v) >= 4 and v not in public)
        elif elem.VR == "UI":
            found.update(v for v in vals if v not in UID_dictionary)
        elif elem.tag.is_private and not elem.tag.is_private_creator:
            # Numbers in private elements coincide with public measurements: words only.
            found.update(v for v in vals
                         if len(v) >= 6 and any(c.isalpha() for c in v) and v not in public)
    return found


def _image_files() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = [Path(p) for p in pydicom.data.get_testdata_files()]
    if SHARED_TESTDATA.is_dir():
        files += sorted(p for p in SHARED_TESTDATA.rglob("*") if p.is_file())
    out = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=True)
            if "PixelData" in ds:
                out.append(path)
        except Exception:  # not DICOM, or deliberately broken: not an image
            continue
    return out


IMAGES = _image_files()


def test_table_is_data_with_edition() -> None:
    table = annex_e_table()
    assert len(table.exact) > 600 and "2026c" in table.edition
    # Spot checks against the standard's own codes.
    assert table.exact[0x00100010].basic == "Z"
    assert table.exact[0x00080018].basic == "U"
    assert table.exact[0x00080022].options["rtnLongModifDatesOpt"] == "C"


@pytest.mark.parametrize("options", [DeidOptions(), OPTIONS], ids=["basic", "options"])
def test_no_identifier_survives_in_any_image(options: DeidOptions) -> None:
    assert len(IMAGES) > 50
    pseudo = Pseudonymiser(b"project-one-secret-key-32-bytes!")
    checked = excluded = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in IMAGES:
            original = pydicom.dcmread(path, force=True)
            secrets = _identifying(original)
            result = deidentify(copy.deepcopy(original), options, pseudo)
            if result.dataset is None:
                assert burned_in_risk(original) is not None
                excluded += 1
                continue
            checked += 1
            out = result.dataset
            assert out.PatientIdentityRemoved == "YES"
            for elem in _elements(out):
                assert not elem.tag.is_private, (path, elem)
                leaked = secrets.intersection(_values(elem))
                assert not leaked, (path.name, elem.keyword or elem.tag, leaked)
            for elem in _elements(out.file_meta):
                assert not secrets.intersection(_values(elem)), (path.name, elem)
    assert checked > 40 and excluded > 0


def test_pseudonyms_consistent_within_project_and_differ_across() -> None:
    path = next(p for p in IMAGES if p.name == "CT_small.dcm")
    one = Pseudonymiser(b"A" * 32)
    two = Pseudonymiser(b"B" * 32)
    a1 = deidentify(pydicom.dcmread(path), OPTIONS, one).dataset
    a2 = deidentify(pydicom.dcmread(path), OPTIONS, one).dataset
    b = deidentify(pydicom.dcmread(path), OPTIONS, two).dataset
    assert a1 is not None and a2 is not None and b is not None
    for kw in ("PatientID", "StudyInstanceUID", "SOPInstanceUID", "StudyDate"):
        assert a1.get(kw) == a2.get(kw)
        assert a1.get(kw) != b.get(kw), kw
    original = pydicom.dcmread(path)
    assert a1.StudyDate != original.StudyDate  # shifted, and by the same days as the series
    from datetime import datetime
    gap = (datetime.strptime(original.StudyDate, "%Y%m%d")
           - datetime.strptime(original.SeriesDate, "%Y%m%d"))
    assert (datetime.strptime(a1.StudyDate, "%Y%m%d")
            - datetime.strptime(a1.SeriesDate, "%Y%m%d")) == gap


def test_age_bands_and_patient_characteristics() -> None:
    ds = pydicom.dcmread(next(p for p in IMAGES if p.name == "CT_small.dcm"))
    ds.PatientAge = "047Y"
    ds.PatientSex = "F"
    out = deidentify(ds, OPTIONS, Pseudonymiser(b"k" * 32)).dataset
    assert out is not None and out.PatientAge == "040Y" and out.PatientSex == "F"
    ds = pydicom.dcmread(next(p for p in IMAGES if p.name == "CT_small.dcm"))
    ds.PatientAge = "047Y"
    out = deidentify(ds, DeidOptions(), Pseudonymiser(b"k" * 32)).dataset
    assert out is not None
    assert not out.get("PatientAge")


def test_private_tags_kept_only_on_safe_list() -> None:
    ds = pydicom.dcmread(next(p for p in IMAGES if p.name == "CT_small.dcm"))
    block = ds.private_block(0x0011, "CLOUDFILM TEST", create=True)
    block.add_new(0x01, "LO", "kept value")
    block.add_new(0x02, "LO", "dropped value")
    safe = DeidOptions(safe_private=frozenset({("CLOUDFILM TEST", 0x0011, 0x01)}))
    out = deidentify(ds, safe, Pseudonymiser(b"k" * 32)).dataset
    assert out is not None
    values = [str(e.value) for e in out if e.tag.is_private]
    assert "kept value" in values and "dropped value" not in values


def test_burned_in_excluded_or_blacked_out() -> None:
    us = next(p for p in IMAGES if pydicom.dcmread(p, stop_before_pixels=True).get("Modality")
              == "US" and "PixelData" in pydicom.dcmread(p))
    pseudo = Pseudonymiser(b"k" * 32)
    excluded = deidentify(pydicom.dcmread(us), DeidOptions(), pseudo)
    assert excluded.dataset is None and excluded.burned_in is BurnedInDecision.EXCLUDED
    region = Region(0, 0, 20, 10)
    done = deidentify(pydicom.dcmread(us), DeidOptions(blackout_regions={"US": (region,)}),
                      pseudo)
    assert done.dataset is not None and done.burned_in is BurnedInDecision.BLACKED_OUT
    arr = done.dataset.pixel_array
    frame = arr[0] if int(done.dataset.get("NumberOfFrames", 1) or 1) > 1 else arr
    assert (frame[0:10, 0:20] == 0).all() and frame.any()
    flagged = pydicom.dcmread(next(p for p in IMAGES if p.name == "CT_small.dcm"))
    flagged.BurnedInAnnotation = "YES"
    assert deidentify(flagged, DeidOptions(), pseudo).dataset is None


REPORT = ("患者：张三，男，45岁。身份证号11010519491231002X，电话13812345678，住院号ZY20231234。"
          "2023年5月6日于杭州市第一人民医院行CT检查，右肺上叶结节。报告医师：李四。"
          "Patient: John Smith, reviewed by Dr. Wang Wei at St Mary Hospital, tel: 0571-87654321, "
          "on 2024-01-02.")


def test_report_text_deidentified_with_residual_check() -> None:
    dictionary = {"张三": "NAME", "Wang Wei": "NAME", "杭州市第一人民医院": "HOSPITAL"}
    result = deidentify_text(REPORT, dictionary)
    for secret in ("张三", "李四", "11010519491231002X", "13812345678", "ZY20231234", "2023",
                   "杭州", "John", "Smith", "Wang", "Mary", "0571", "2024"):
        assert secret not in result.text, secret
    assert "右肺上叶结节" in result.text  # the findings stay
    assert residual_risk(result.text, dictionary) == []
    assert residual_risk(REPORT, dictionary)  # the check does find the originals
    assert resident_id_valid("11010519491231002X") and not resident_id_valid("110105194912310021")


def test_label_order_and_residual_name_shaped_field() -> None:
    out = deidentify_text("报告医师：李明  审核医师：黄平静").text
    assert "李明" not in out and "黄平静" not in out
    # What the cleaner once left behind is flagged by the residual check.
    assert residual_risk("报告医师：[NAME]  审核[NAME]：黄平静")


def test_structured_report_text_is_cleaned() -> None:
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(next(p for p in IMAGES if p.name == "CT_small.dcm"))
    del ds.PixelData
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = ("患者：王小东，电话13812345678，2023年5月6日于杭州市第一人民医院检查，"
                      "右肺结节。")
    nested = Dataset()
    nested.ContentSequence = Sequence([item])
    ds.ContentSequence = Sequence([nested])
    for options in (DeidOptions(), OPTIONS):
        out = deidentify(copy.deepcopy(ds), options, Pseudonymiser(b"k" * 32)).dataset
        assert out is not None
        text = out.ContentSequence[0].ContentSequence[0].TextValue
        for secret in ("王小东", "13812345678", "2023", "杭州"):
            assert secret not in text
        assert "右肺结节" in text
