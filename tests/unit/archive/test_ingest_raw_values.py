"""Ingest reads its index fields from the raw bytes only where pydicom would give the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import data as pydicom_data
from pydicom import dcmread

from cloudfilm.services.archive import ingest

_BUNDLED = sorted(Path(pydicom_data.__file__).parent.glob("test_files/**/*.dcm"))
_KEYWORDS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
             "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyDate",
             "StudyTime", "AccessionNumber", "StudyID", "Modality", "BodyPartExamined",
             "InstanceNumber", "NumberOfFrames", "SeriesNumber", "Rows", "Columns",
             "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"]


def _read(path: Path) -> object:
    try:
        return dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        pytest.skip(f"pydicom cannot read it: {exc}")


@pytest.mark.parametrize("path", _BUNDLED, ids=lambda p: p.name)
def test_raw_values_are_what_pydicom_gives(path: Path) -> None:
    raw_ds, converted_ds = _read(path), _read(path)
    for keyword in _KEYWORDS:
        value = ingest._raw_value(raw_ds, keyword)  # type: ignore[arg-type]
        if value is ingest._CONVERT:
            continue
        try:
            expected = converted_ds.get(keyword)  # type: ignore[attr-defined]
        except Exception:
            continue  # pydicom cannot convert it; ingest then takes pydicom's path anyway
        if isinstance(value, int):
            assert value == expected, keyword
        else:
            assert str(value or "").strip() == str(expected or "").strip(), keyword


def test_an_explicit_vr_ct_is_read_raw(tmp_path: Path) -> None:
    from tests.factories import make_ct, to_bytes

    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(make_ct(size=8)))
    ds = dcmread(path, stop_before_pixels=True)
    assert ingest._raw_value(ds, "SOPInstanceUID") == str(ds.SOPInstanceUID)
    assert ingest._raw_value(ds, "Rows") == 8
    assert ingest._raw_value(ds, "PatientID") == ds.PatientID


def test_multi_valued_non_ascii_and_escaped_values_go_to_pydicom() -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import BaseTag

    def ds_with(value: bytes, vr: str = "LO") -> Dataset:
        tag = BaseTag(0x00100020)
        return Dataset({tag: RawDataElement(tag, vr, len(value), value, 0, False, True)})

    assert ingest._raw_value(ds_with(b"P1 "), "PatientID") == "P1"
    for value in (b"P1\\P2", "王".encode(), b"\x1b$)AP1"):
        assert ingest._raw_value(ds_with(value), "PatientID") is ingest._CONVERT
    assert ingest._raw_value(ds_with(b"P1", vr="UN"), "PatientID") is ingest._CONVERT
