"""Garbage through the doors, on both databases: refused cleanly, never a 500, nothing
half-written.

- the ingest pipeline (every door's): any failure is a CloudfilmError, and a refused object
  leaves no blob, no index row and no scratch file behind;
- STOW-RS bodies: always 2xx/4xx with a JSON body;
- QIDO-RS query parameters, WADO-RS frame lists and rendering parameters: never 5xx.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select
from tests.factories import make_ct, multipart, to_bytes
from tests.fuzz_support import FUZZ, garbage

from cloudfilm.infrastructure.db.models import Instance
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import CloudfilmError


def _blobs(root: Path) -> set[Path]:
    return {p for p in root.rglob("*.dcm") if ".tmp" not in p.parts}


@pytest.fixture
def instance_count(db_url: str) -> Any:
    engine = create_engine(db_url)

    def count() -> int:
        with engine.connect() as conn:  # closed at once: an open one blocks TRUNCATE on PG
            return int(conn.execute(select(func.count()).select_from(Instance)).scalar_one())

    yield count
    engine.dispose()


@FUZZ
@given(data=garbage)
def test_ingest_refuses_garbage_with_service_errors_only(
    services: Services, settings: Any, tmp_path: Path, instance_count: Any, data: bytes
) -> None:
    blob_root = Path(settings.effective_storage_url)
    source = tmp_path / "upload.dcm"
    source.write_bytes(data)
    before_blobs, before_rows = _blobs(blob_root), instance_count()
    try:
        services.ingest.ingest_file(source, sender=Sender(door="fuzz"))
    except CloudfilmError:
        assert _blobs(blob_root) == before_blobs, "a refused object left a blob"
        assert instance_count() == before_rows, "a refused object left an index row"
    assert not list(services.spool_dir.glob("part10-*")), "scratch file left behind"


_BOUNDARY = st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1,
                    max_size=30)
_PART_TYPES = st.sampled_from(["application/dicom", "application/json", "", "text/plain",
                               "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"])


@st.composite
def stow_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["multipart", "multipart", "raw", "bare"]))
    boundary = draw(_BOUNDARY)
    if kind == "raw":
        body = draw(st.binary(max_size=800))
    else:
        parts = draw(st.lists(st.one_of(garbage, st.just(to_bytes(make_ct(size=8)))),
                              min_size=0 if kind == "multipart" else 1, max_size=3))
        if kind == "bare":
            return parts[0], draw(st.sampled_from(["application/dicom", "application/dicom;"]))
        body, _ = multipart(parts, content_type=draw(_PART_TYPES), boundary=boundary)
        if draw(st.booleans()):  # cut it anywhere: a truncated upload
            body = body[: draw(st.integers(0, len(body)))]
    content_type = draw(st.one_of(
        st.just(f'multipart/related; type="application/dicom"; boundary={boundary}'),
        st.just(f"multipart/related; boundary={boundary}"),
        st.just(f'multipart/related; type="application/dicom"; boundary="{boundary}"'),
        st.sampled_from(["multipart/related", "multipart/related; type=\"image/jpeg\"; "
                         "boundary=x", "application/json", "", "multipart/related; boundary="]),
        st.text(max_size=60),
    ))
    return body, content_type


def _ascii_header(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


@FUZZ
@given(case=stow_bodies(), study=st.one_of(st.none(), st.sampled_from(["1.2.3", "x", "1..2"])))
def test_stow_answers_2xx_or_4xx_with_json(client: Any, case: tuple[bytes, str],
                                           study: str | None) -> None:
    body, content_type = case
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    response = client.post(url, content=body, headers={"Content-Type": _ascii_header(
        content_type)})
    assert 200 <= response.status_code < 500, response.text[:500]
    assert response.status_code < 300 or response.status_code >= 400
    response.json()  # a JSON message (DICOM JSON or a problem document)


_QIDO_KEYS = ["PatientName", "PatientID", "StudyDate", "StudyTime", "ModalitiesInStudy",
              "00100020", "StudyInstanceUID", "limit", "offset", "includefield",
              "fuzzymatching", "orderby", "AccessionNumber", "Modality", "SeriesNumber",
              "InstanceNumber", "NoSuchThing", "00091010", "SOPClassUID"]
_VALUES = st.one_of(st.text(max_size=30), st.sampled_from([
    "*", "?", "", "20240101-", "-", "2024-13-01", "1\\2", "王*", "-1", "1e9",
    "99999999999999999999999", "all", "true", "NaN", "%00", "\x00"]))


@FUZZ
@given(path=st.sampled_from(["studies", "series", "instances", "studies/1.2.3/series",
                             "studies/1.2.3/instances", "studies/1.2/series/3.4/instances"]),
       params=st.lists(st.tuples(st.one_of(st.sampled_from(_QIDO_KEYS), st.text(max_size=10)),
                                 _VALUES), max_size=5))
# Found by this test: a correlated EXISTS without FROM, and integers SQLite cannot bind.
@example(path="series", params=[("ModalitiesInStudy", "CT")])
@example(path="instances", params=[("ModalitiesInStudy", "CT\\MR")])
@example(path="series", params=[("SeriesNumber", "9223372036854775808")])
@example(path="studies", params=[("offset", "99999999999999999999999")])
@example(path="studies", params=[("PatientName", "\x00")])
def test_qido_never_answers_5xx(client: Any, path: str, params: list[tuple[str, str]]) -> None:
    response = client.get(f"/dicomweb/{path}", params=params)
    assert response.status_code < 500, response.text[:500]


@pytest.fixture
def stored(client: Any) -> str:
    """URL of one stored CT instance."""
    ds = make_ct(size=16)
    body, content_type = multipart([to_bytes(ds)])
    assert client.post("/dicomweb/studies", content=body,
                       headers={"Content-Type": content_type}).status_code == 200
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


_ACCEPT = st.sampled_from([
    None, "*/*", "image/jpeg", "image/png", "image/gif", "image/*", "text/html",
    'multipart/related; type="application/octet-stream"',
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    'multipart/related; type="image/jls"', 'multipart/related; type="image/jpeg"',
    'multipart/related; type="*/*"', "multipart/related", "application/dicom", ";;;", "q=0",
])
_NUM = st.one_of(st.integers(-10**9, 10**9).map(str), st.floats().map(str),
                 st.sampled_from(["", "nan", "inf", "0", "1e400", "x"]))


@FUZZ
@given(frames=st.one_of(st.text(min_size=1, max_size=20),
                        st.lists(st.integers(-3, 2**64), min_size=1, max_size=4).map(
                            lambda ns: ",".join(map(str, ns)))),
       accept=_ACCEPT)
def test_wado_frame_lists_never_answer_5xx(client: Any, stored: str, frames: str,
                                           accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get(f"{stored}/frames/{quote(frames, safe='')}", headers=headers)
    assert response.status_code < 500, response.text[:500]


@FUZZ
@given(target=st.sampled_from(["rendered", "thumbnail", "frames/1/rendered",
                               "frames/2/rendered", "frames/0/rendered"]),
       window=st.one_of(st.none(), st.text(max_size=15),
                        st.lists(_NUM, min_size=1, max_size=4).map(",".join)),
       viewport=st.one_of(st.none(), st.text(max_size=10),
                          st.lists(st.one_of(_NUM, st.integers(-5, 5000).map(str)),
                                   min_size=1, max_size=3).map(",".join)),
       quality=st.one_of(st.none(), _NUM), accept=_ACCEPT)
def test_rendering_parameters_never_answer_5xx(client: Any, stored: str, target: str,
                                               window: str | None, viewport: str | None,
                                               quality: str | None, accept: str | None) -> None:
    params = {k: v for k, v in (("window", window), ("viewport", viewport),
                                ("quality", quality)) if v is not None}
    headers = {"Accept": accept} if accept else {}
    response = client.get(f"{stored}/{target}", params=params, headers=headers)
    assert response.status_code < 500, response.text[:500]


def test_nul_in_header_text_is_stored_without_it(services: Services, tmp_path: Path) -> None:
    """Found by the fuzz tests: PostgreSQL refused the NUL and the store failed with a 500."""
    source = tmp_path / "nul.dcm"
    source.write_bytes(to_bytes(make_ct(patient_name="Wang\x00^Li", StudyDescription="CT\x00")))
    assert services.ingest.ingest_file(source, sender=Sender(door="fuzz")).outcome == "stored"
