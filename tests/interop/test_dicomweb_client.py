"""Interoperability: the `dicomweb-client` package (nobody here wrote it) against a real
cloudfilm HTTP server on a loopback port, on both index databases."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid
from tests.conftest import shared_file
from tests.factories import make_ct

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services

pytestmark = pytest.mark.interop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_url(services: Services) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the HTTP server did not start"
    yield f"http://127.0.0.1:{port}/dicomweb"
    server.should_exit = True
    thread.join(10)


def test_store_search_retrieve_round_trip(server_url: str) -> None:
    client = DICOMwebClient(url=server_url)
    study, series = generate_uid(), generate_uid()
    sent = [make_ct(study_uid=study, series_uid=series, instance_number=i, size=64,
                    patient_id="DWC-1", patient_name="Li^Na=李^娜")
            for i in range(1, 4)]
    response = client.store_instances(sent)
    assert len(response.ReferencedSOPSequence) == 3

    studies = client.search_for_studies(search_filters={"PatientID": "DWC-1"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    by_name = client.search_for_studies(search_filters={"PatientName": "李娜"})
    assert len(by_name) == 1
    instances = client.search_for_instances(study, series)
    assert len(instances) == 3

    got = client.retrieve_series(study, series)
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(ds.SOPInstanceUID for ds in sent)
    assert {ds.PixelData for ds in got} == {ds.PixelData for ds in sent}

    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 3 and "7FE00010" in metadata[0]

    frames = client.retrieve_instance_frames(study, series, sent[0].SOPInstanceUID, [1])
    assert frames[0] == sent[0].PixelData
    jpeg = client.retrieve_instance_rendered(study, series, sent[0].SOPInstanceUID,
                                             media_types=("image/jpeg",))
    assert jpeg[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "relative",
    ["compressed/CT_693_J2KR.dcm", "compressed/US_palette_RLE_2frame.dcm",
     "compressed/by_ts_uid/1.2.840.10008.1.2.4.80.dcm",
     "compressed/by_ts_uid/1.2.840.10008.1.2.4.50.dcm"],
)
def test_real_compressed_files_come_back_bit_identical(server_url: str, relative: str) -> None:
    path: Path = shared_file(relative)
    original = path.read_bytes()
    ds = dcmread(io.BytesIO(original))
    client = DICOMwebClient(url=server_url)
    client.store_instances([ds])
    # Raw HTTP through the client's session, to compare the exact bytes as stored.
    url = (f"{server_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    raw: Any = client._session.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                "transfer-syntax=*"})
    assert raw.status_code == 200
    stored = _sha_of_dicom_part(raw.content, raw.headers["content-type"])
    expected = dcmread(io.BytesIO(original))
    buffer = io.BytesIO()
    expected.save_as(buffer)
    # dicomweb-client re-encodes on upload; what we serve must be exactly what we received,
    # and its pixels must be the original's.
    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                    ds.SOPInstanceUID)
    assert back.PixelData == ds.PixelData
    assert len(stored) == 64


def _sha_of_dicom_part(body: bytes, content_type: str) -> str:
    from tests.factories import split_multipart

    parts = split_multipart(body, content_type)
    assert len(parts) == 1
    return hashlib.sha256(parts[0][1]).hexdigest()
