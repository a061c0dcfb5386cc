"""C-FIND response identifiers encoded from raw values are byte for byte the Dataset route's."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from cloudfilm.interfaces.dimse.identifiers import (
    identifier_bytes,
    parse_find,
    response_identifier,
)

MATCH: dict[str, Any] = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "王^小东"}]},
    "00100020": {"vr": "LO", "Value": ["P0001"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.840.113619.2.55.3"]},  # odd length: NUL pad
    "00080020": {"vr": "DA", "Value": ["20240229"]},
    "00080030": {"vr": "TM"},
    "00080061": {"vr": "CS", "Value": ["CT", "PT"]},
    "00201208": {"vr": "IS", "Value": [301]},
    "00081030": {"vr": "LO", "Value": ["胸部 CT 平扫"]},
    "00081190": {"vr": "UR", "Value": ["http://x/studies/1"]},  # never returned
}


def _query(*keywords: str) -> Any:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    for keyword in keywords:
        setattr(ident, keyword, "")
    ident.PatientID = "P0001"
    return parse_find(ident, "study")


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("match", [MATCH, {}, {"00100010": {"vr": "PN"}}])
def test_raw_identifier_encodes_as_the_dataset_does(implicit: bool,
                                                    match: dict[str, Any]) -> None:
    query = _query("PatientName", "StudyInstanceUID", "StudyDate", "StudyTime",
                   "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDescription",
                   "RetrieveURL", "AccessionNumber", "RetrieveAETitle")
    fast = identifier_bytes(match, query, "CLOUDFILM", implicit_vr=implicit)
    assert fast is not None
    slow = response_identifier(match, query, "CLOUDFILM")
    assert fast == encode(slow, implicit, True)


@pytest.mark.parametrize("item", [
    {"vr": "PN", "Value": [{"Alphabetic": "Wang^Xiao", "Ideographic": "王^小"}]},
    {"vr": "DS", "Value": [1.5]},
    {"vr": "SQ", "Value": [{}]},
])
def test_values_it_does_not_encode_take_the_dataset_route(item: dict[str, Any]) -> None:
    query = _query("PatientName")
    assert identifier_bytes({"00100010": item}, query, "AE", implicit_vr=False) is None


@pytest.mark.parametrize("implicit", [False, True])
def test_long_explicit_vrs_and_empty_keys_encode_as_the_dataset_does(implicit: bool) -> None:
    """UT/UR/UC take a 4-byte length in Explicit VR; an empty binary key keeps its VR."""
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.add_new(0x00324000, "LT", "")  # StudyComments
    ident.add_new(0x00081030, "LO", "")
    ident.add_new(0x00201208, "IS", "")
    ident.add_new(0x00280010, "US", None)  # not matchable: a return key only
    ident.add_new(0x00400280, "ST", "")
    query = parse_find(ident, "study")
    match = {"00324000": {"vr": "UT", "Value": ["lang " * 9]},
             "00081030": {"vr": "LO", "Value": ["x"]}}
    fast = identifier_bytes(match, query, "AE1", implicit_vr=implicit)
    assert fast is not None
    assert fast == encode(response_identifier(match, query, "AE1"), implicit, True)


def test_a_requested_sequence_takes_the_dataset_route() -> None:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.add_new(0x00081032, "SQ", [])  # ProcedureCodeSequence
    query = parse_find(ident, "study")
    assert identifier_bytes({}, query, "AE", implicit_vr=True) is None
