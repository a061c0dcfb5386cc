"""Garbage into the report readers: each fails only with ReportFormatError.

- FHIR: mutated JSON of a valid DiagnosticReport (values swapped for other JSON types,
  keys dropped) and raw bytes;
- HL7 v2: a valid ORU^R01 with characters inserted, deleted or replaced;
- DICOM SR: a valid SR's content tree with items' values replaced by odd ones.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from tests.factories import make_text_sr
from tests.fuzz_support import FUZZ
from tests.integration.reports.support import fhir_report, oru_r01

from cloudfilm.infrastructure.reports.dicom import read_dicom_report
from cloudfilm.infrastructure.reports.document import ReportFormatError
from cloudfilm.infrastructure.reports.fhir import read_diagnostic_report
from cloudfilm.infrastructure.reports.hl7v2 import read_oru_r01

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=6)
_VALID = fhir_report(study_uid="1.2.3.4", accession="A1")


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*prefix, index))
    return out


_PATHS = [p for p in _paths(_VALID) if p]


def _replace(document: Any, path: tuple, new: Any) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if new is _DROP and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = None if new is _DROP else new
    return copy


_DROP = object()


@FUZZ
@given(path=st.sampled_from(_PATHS), new=_JSON | st.just(_DROP))
def test_fhir_reader_raises_only_report_format_error(path: tuple, new: Any) -> None:
    try:
        doc = read_diagnostic_report(_replace(_VALID, path, new))
    except ReportFormatError as exc:
        assert exc.field.startswith("DiagnosticReport")
        return
    assert doc.report_key


@FUZZ
@given(data=st.binary(max_size=300))
def test_fhir_reader_on_raw_bytes(data: bytes) -> None:
    with contextlib.suppress(ReportFormatError):  # anything else fails the test
        read_diagnostic_report(data)


_ORU = oru_r01(study_uid="1.2.3.4")


@FUZZ
@given(position=st.integers(0, len(_ORU)), cut=st.integers(0, 8),
       insert=st.text(alphabet="|^~\\&\r\nMSHOBRX01 结节", max_size=6))
def test_hl7_reader_raises_only_report_format_error(position: int, cut: int,
                                                    insert: str) -> None:
    message = _ORU[:position] + insert + _ORU[position + cut:]
    try:
        docs = read_oru_r01(message)
    except ReportFormatError:
        return
    assert all(d.report_key for d in docs)


_SR = make_text_sr(study_uid="1.2.3.4")
_ODD = st.sampled_from(["", "TEXT", "CONTAINER", "CODE", "NUM", "BOGUS", None]) | \
    st.text(max_size=10)


@FUZZ
@given(index=st.integers(0, 20), keyword=st.sampled_from(
    ["ValueType", "TextValue", "RelationshipType", "ConceptNameCodeSequence",
     "ContentSequence", "CompletionFlag", "VerificationFlag", "ContentDate"]), value=_ODD)
def test_sr_reader_raises_only_report_format_error(index: int, keyword: str,
                                                   value: str | None) -> None:
    ds = Dataset()
    ds.update(_SR)
    ds.file_meta = _SR.file_meta
    items = list(_walk(ds))
    target = items[index % len(items)]
    try:
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        elif keyword.endswith("Sequence"):
            setattr(target, keyword, [])
        else:
            setattr(target, keyword, value)
    except (TypeError, ValueError):
        return  # pydicom itself refuses the value: nothing to read
    try:
        doc = read_dicom_report(ds)
    except ReportFormatError:
        return
    assert doc.report_key.startswith("sop:")


def _walk(ds: Dataset) -> Iterator[Dataset]:
    yield ds
    for item in ds.get("ContentSequence", []):
        yield from _walk(item)
