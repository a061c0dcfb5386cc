"""The demo province: deterministic, valid identifiers, hospitals' own conventions."""

from __future__ import annotations

import re
from datetime import datetime

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from cloudfilm.demo.objects import exam_datasets, to_part10
from cloudfilm.demo.province import NATIONAL_ID_ISSUER, build_province
from cloudfilm.services.identity import national_id

ANCHOR = datetime(2024, 5, 1, 10)


def test_same_seed_same_province_and_uids() -> None:
    a = build_province("small", seed=3, anchor=ANCHOR)
    b = build_province("small", seed=3, anchor=ANCHOR)
    assert [e.study_uid for e in a.exams] == [e.study_uid for e in b.exams]
    assert build_province("small", seed=4, anchor=ANCHOR).exams[0].study_uid != \
        a.exams[0].study_uid


def test_residents_have_valid_ids_and_two_script_names() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    assert len(province.hospitals) == 12
    assert len(province.residents) >= 200
    assert len({r.national_id for r in province.residents}) == len(province.residents)
    for resident in province.residents:
        assert national_id.is_valid(resident.national_id)
        assert re.fullmatch(r"[A-Za-z]+\^[A-Za-z]+=\w\^\w{1,2}", resident.dicom_name)
    modalities = {e.modality for e in province.exams}
    assert modalities == {"CT", "MR", "DX", "US"}
    late = [e for e in province.exams if 12 < (ANCHOR - e.performed).total_seconds() / 3600 < 72]
    assert late, "some recent exams must reach the archive more than 12 hours late"


def test_objects_carry_charset_local_id_and_national_id() -> None:
    province = build_province("small", seed=3, anchor=ANCHOR)
    exam = next(e for e in province.exams if e.modality == "DX" and
                e.hospital.charset == "GB18030")
    ds = next(exam_datasets(exam, 3))
    again = dcmread(DicomBytesIO(to_part10(ds)))
    assert again.SpecificCharacterSet == "GB18030"
    assert str(again.PatientName) == exam.resident.dicom_name
    assert again.PatientID.startswith(exam.hospital.patient_id_prefix)
    other = again.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID) == (exam.resident.national_id,
                                                          NATIONAL_ID_ISSUER)
    assert to_part10(next(exam_datasets(exam, 3))) == to_part10(ds)  # deterministic bytes
