"""Bounded work per request at the HTTP doors (issue 11, findings 7 and 8).

Rendering size is capped at both rendering doors (WADO-RS /rendered, WADO-URI), and a
STOW-RS part that is not DICOM is refused after its first bytes, whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Any

import pytest
from PIL import Image
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from tests.factories import make_ct, multipart, to_bytes

from cloudfilm.services.container import Services


def _stow(client: Any, parts: list[bytes], content_type: str | None = None) -> Any:
    if content_type == "application/dicom":
        return client.post("/dicomweb/studies", content=parts[0],
                           headers={"Content-Type": content_type})
    body, ctype = multipart(parts)
    return client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})


@pytest.fixture
def instance(client: Any) -> dict[str, str]:
    ds = make_ct(size=512)
    assert _stow(client, [to_bytes(ds)]).status_code == 200
    return {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
            "sop": ds.SOPInstanceUID}


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


# -- finding 7: rendering ----------------------------------------------------------------


@pytest.mark.parametrize("viewport", ["40000,40000", "4097,100", "100,4097"])
def test_rendered_viewport_beyond_the_cap_is_400(client: Any, instance: dict[str, str],
                                                 viewport: str) -> None:
    url = (f"/dicomweb/studies/{instance['study']}/series/{instance['series']}/instances/"
           f"{instance['sop']}/rendered")
    started = time.perf_counter()
    response = client.get(url, params={"viewport": viewport})
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400, response.text
    assert "4096" in response.text
    # within the cap, enlargement stops at 2x of the 512 x 512 source
    big = client.get(url, params={"viewport": "4096,4096"})
    assert big.status_code == 200 and _size(big.content) == (1024, 1024)


@pytest.mark.parametrize("params", [{"rows": "40000"}, {"columns": "40000"},
                                    {"rows": "40000", "columns": "40000"}])
def test_wado_uri_rows_columns_beyond_the_cap_is_400(client: Any, instance: dict[str, str],
                                                     params: dict[str, str]) -> None:
    query = {"requestType": "WADO", "studyUID": instance["study"],
             "seriesUID": instance["series"], "objectUID": instance["sop"]}
    started = time.perf_counter()
    response = client.get("/wado", params={**query, **params})
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400, response.text
    ok = client.get("/wado", params={**query, "rows": "3000", "columns": "3000"})
    assert ok.status_code == 200 and _size(ok.content) == (1024, 1024)


# -- finding 8: garbage STOW parts --------------------------------------------------------

MB = 1024 * 1024


@pytest.mark.parametrize("content_type", ["multipart", "application/dicom"])
def test_zero_filled_part_is_refused_quickly(client: Any, services: Services,
                                             content_type: str) -> None:
    zeros = bytes(16 * MB)
    started = time.perf_counter()
    response = _stow(client, [zeros], content_type)
    elapsed = time.perf_counter() - started
    assert response.status_code == 409, response.text
    reason = response.json()["00081198"]["Value"][0]
    assert reason["00081197"]["Value"] == [0xC000]
    assert "not a DICOM" in reason["0040A160"]["Value"][0]
    assert elapsed < 2.0, f"a 16 MB zero part took {elapsed:.1f} s"
    assert list(services.spool_dir.iterdir()) == []


def test_garbage_part_beside_good_ones_fails_alone(client: Any, services: Services) -> None:
    good = make_ct()
    raw = make_ct()  # a raw data set without preamble is DICOM too (some C-STORE dumps)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, raw)
    raw_bytes = buffer.getvalue()
    assert raw_bytes[:2] == b"\x08\x00"
    noise = b"%PDF-1.4 not dicom at all" + bytes(2 * MB)
    response = _stow(client, [to_bytes(good), noise, raw_bytes])
    assert response.status_code == 202, response.text
    stored = {item["00081155"]["Value"][0] for item in response.json()["00081199"]["Value"]}
    assert stored == {good.SOPInstanceUID, raw.SOPInstanceUID}
    [failed] = response.json()["00081198"]["Value"]
    assert "not a DICOM" in failed["0040A160"]["Value"][0]
    assert list(services.spool_dir.iterdir()) == []


def test_dicom_header_followed_by_zeros_is_refused_quickly(client: Any) -> None:
    # A valid preamble and meta group, then zeros: the parser must not walk them either.
    head = to_bytes(make_ct())
    meta_end = head.index(b"\x08\x00", 132 + 12)  # first data set element (group 0008)
    started = time.perf_counter()
    response = _stow(client, [head[:meta_end] + bytes(16 * MB)])
    assert response.status_code == 409, response.text
    assert time.perf_counter() - started < 2.0


# -- a request that ends early leaves nothing behind --------------------------------------


def _scope(content_type: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/dicomweb/studies",
            "raw_path": b"/dicomweb/studies", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), (b"content-type", content_type.encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8042)}


@pytest.mark.parametrize("kind", ["multipart", "bare"])
@pytest.mark.parametrize("ending", ["disconnect", "cancel"])
def test_an_interrupted_upload_stops_reading_and_removes_its_spool(
        services: Services, ending: str, kind: str) -> None:
    from cloudfilm.interfaces.api.http import create_app

    app = create_app(services)
    if kind == "multipart":
        body, content_type = multipart([to_bytes(make_ct()) + bytes(8 * MB)])
    else:
        body, content_type = to_bytes(make_ct()) + bytes(8 * MB), "application/dicom"
    chunk = 1 * MB
    pieces = [body[i:i + chunk] for i in range(0, 4 * chunk, chunk)]  # never the whole body
    reads = 0
    all_read = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": True}
        all_read.set()
        if ending == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)  # the client stalls; the server shuts down
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> None:
        task = asyncio.create_task(app(_scope(content_type), receive, send))
        await asyncio.wait_for(all_read.wait(), 30)
        if ending == "cancel":
            await asyncio.sleep(0.05)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 30)

    asyncio.run(run())
    assert reads == 5  # four pieces, then the disconnect or the stall: nothing more
    assert list(services.spool_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["multipart", "bare"])
def test_a_spool_write_failure_is_503_and_leaves_nothing(
        client: Any, services: Services, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    import errno

    from cloudfilm.interfaces.api.dicomweb import stow

    def disk_full(fd: int, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stow, "_write_all", disk_full)
    response = _stow(client, [to_bytes(make_ct())],
                     "application/dicom" if kind == "bare" else None)
    # Not "malformed multipart body" (400): the disk failed, a retry later may work.
    assert response.status_code == 503, response.text
    assert "could not spool the upload: No space left on device" in response.json()["message"]
    assert list(services.spool_dir.iterdir()) == []
