"""Garbage into the pure parsers: each fails only with its own documented error.

- ``part10.read_header``: Part10Error (the ingest pipeline turns it into
  InvalidInstanceError), never another exception;
- C-FIND identifiers (``interfaces.dimse.identifiers``): InvalidQueryError only;
- QIDO parameters (``services.archive.query.parse_search``): InvalidQueryError only;
- WADO-RS frame lists and rendering parameters: HttpProblem 400 only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from tests.fuzz_support import FUZZ, garbage

from cloudfilm.infrastructure.dicom.part10 import Part10Error, read_header
from cloudfilm.interfaces.api.dicomweb.wado import _frame_numbers, rendering_options
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.interfaces.dimse.identifiers import parse_find, response_identifier
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.errors import CloudfilmError, InvalidQueryError


@FUZZ
@given(data=garbage)
def test_read_header_raises_only_part10_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(data)
        fh.flush()
        try:
            header = read_header(Path(fh.name))
        except Part10Error:
            return
        assert len(header.dataset) > 0
        assert header.size == len(data)


def test_an_unknown_transfer_syntax_is_refused(tmp_path: Path) -> None:
    """Found by the fuzz tests: pydicom read the header, JSON conversion then raised."""
    from tests.factories import make_ct, to_bytes

    data = to_bytes(make_ct(size=8)).replace(b"1.2.840.10008.1.2.1\x00", b"0.2.840.10008.1.2.1\x00")
    path = tmp_path / "bogus.dcm"
    path.write_bytes(data)
    with pytest.raises(Part10Error, match="not a known transfer syntax"):
        read_header(path)


# Keys a C-FIND SCU sends, with the values a careless or hostile one might put in them.
_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime",
         "AccessionNumber", "ModalitiesInStudy", "Modality", "StudyInstanceUID",
         "SeriesInstanceUID", "SOPInstanceUID", "StudyDescription", "SeriesNumber",
         "InstanceNumber", "IssuerOfPatientID", "ReferringPhysicianName", "PatientSex",
         "NumberOfStudyRelatedInstances", "BodyPartExamined"]
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", "?", "", "-", "20240101-", "-20240101", "2024-01-01", "20241301",
                     "1.2.3\\4.5.6", "王*", "Wang^Xiao*", "\\", "99999999999999999999",
                     "1-2-3", "000000-999999", "0x10", "%", "_"]),
)


@st.composite
def identifiers(draw: st.DrawFn) -> tuple[Dataset, str]:
    ds = Dataset()
    level = draw(st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE", "", "FRAME", "study"]))
    if level or draw(st.booleans()):
        ds.QueryRetrieveLevel = level
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=8, unique=True)):
        value = draw(_TEXT)
        try:
            setattr(ds, key, value)
        except Exception:  # pydicom refuses some values for some VRs: not our parser's input
            continue
    if draw(st.booleans()):
        ds.add_new(0x00091010, "LO", draw(st.text(max_size=10)))  # a private element
    if draw(st.booleans()):
        ds.add_new(0x00081111, "SQ", [])  # an empty sequence key
    return ds, draw(st.sampled_from(["patient", "study"]))


@FUZZ
@given(case=identifiers())
def test_c_find_identifier_conversion_raises_only_invalid_query(case: tuple[Dataset, str]
                                                                 ) -> None:
    identifier, model = case
    try:
        query = parse_find(identifier, model)  # type: ignore[arg-type]
        # Parameters must also be acceptable to the search service they are made for.
        parse_search(query.search_level, list(query.params))
    except InvalidQueryError:
        return
    response = response_identifier({}, query, "CLOUDFILM")
    assert response.QueryRetrieveLevel == query.level


_PARAM_NAMES = ["PatientName", "PatientID", "StudyDate", "StudyTime", "ModalitiesInStudy",
                "00100020", "0020000D", "StudyInstanceUID", "limit", "offset", "includefield",
                "fuzzymatching", "orderby", "AccessionNumber", "Modality", "SeriesNumber",
                "NoSuchThing", "00091010", "", "0010", "ZZZZZZZZ"]


@FUZZ
@given(level=st.sampled_from(["study", "series", "instance"]),
       params=st.lists(st.tuples(st.one_of(st.sampled_from(_PARAM_NAMES), st.text(max_size=12)),
                                 _TEXT), max_size=6))
def test_qido_parameters_raise_only_invalid_query(level: str,
                                                  params: list[tuple[str, str]]) -> None:
    try:
        parse_search(level, params)  # type: ignore[arg-type]
    except CloudfilmError as exc:
        assert isinstance(exc, InvalidQueryError)


@FUZZ
@given(text=st.one_of(st.text(max_size=30), st.lists(st.integers(-5, 2**70), max_size=5).map(
    lambda ns: ",".join(map(str, ns)))))
def test_frame_list_is_numbers_or_400(text: str) -> None:
    try:
        numbers = _frame_numbers(text)
    except HttpProblem as exc:
        assert exc.status == 400
        return
    assert numbers and all(n >= 1 for n in numbers)


_NUMBER = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats().map(str),
                    st.sampled_from(["", "nan", "inf", "-inf", "1e400", "0", "-0", "x"]))


@FUZZ
@given(window=st.one_of(st.none(), st.text(max_size=20),
                        st.lists(_NUMBER, min_size=1, max_size=4).map(",".join)),
       viewport=st.one_of(st.none(), st.text(max_size=12),
                          st.lists(_NUMBER, min_size=1, max_size=3).map(",".join)),
       quality=st.one_of(st.none(), _NUMBER))
def test_rendering_parameters_are_options_or_400(window: str | None, viewport: str | None,
                                                 quality: str | None) -> None:
    params = {k: v for k, v in (("window", window), ("viewport", viewport),
                                ("quality", quality)) if v is not None}
    try:
        options = rendering_options(params)
    except HttpProblem as exc:
        assert exc.status == 400
        return
    assert set(options) <= {"window", "viewport", "quality"}


@pytest.mark.parametrize("text", ["1", "1,2,3", " 2 , 3 "])
def test_frame_list_accepts_the_usual_forms(text: str) -> None:
    assert _frame_numbers(text)


@pytest.mark.parametrize("level", ["STUDY", "Series", "patient", ""])
def test_an_unknown_search_level_is_a_programming_error_not_an_instance_search(
        level: str) -> None:
    with pytest.raises(ValueError, match="unknown search level"):
        parse_search(level, [("PatientID", "1")])  # type: ignore[arg-type]
