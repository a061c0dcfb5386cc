"""`cloudfilm import` over real files, compressed syntaxes, and the S3 backend end to end."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from rich.console import Console
from tests.conftest import TEST_HTTP, TEST_SECURITY, shared_file
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.cli.importer import run_import
from cloudfilm.config import Settings
from cloudfilm.services.container import Services


def test_import_reports_stored_duplicates_and_failures(services: Services,
                                                       tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / "sub" / f"{i}.dcm").write_bytes(to_bytes(make_ct(instance_number=i)))
    (folder / "junk.txt").write_text("not an image")
    console = Console(file=io.StringIO(), width=200)
    first = run_import(services, [folder], workers=2, console=console)
    assert (first.stored, first.duplicates, first.failed) == (3, 0, 1)
    assert "junk.txt" in str(first.failures[0][0])
    assert "not a DICOM file" in first.failures[0][1]
    again = run_import(services, [folder], workers=2, console=console)
    assert (again.stored, again.duplicates) == (0, 3)
    assert "stored 0, already present 3" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("compressed/CT_693_J2KR.dcm", None),
        ("compressed/same_mr_9_syntaxes/4.dcm", "compressed/same_mr_9_syntaxes/1.dcm"),
        ("compressed/same_mr_9_syntaxes/7.dcm", "compressed/same_mr_9_syntaxes/1.dcm"),
        ("compressed/same_mr_9_syntaxes/5.dcm", "compressed/same_mr_9_syntaxes/1.dcm"),
    ],
)
def test_compressed_objects_are_kept_as_received_and_decoded_on_request(
    client: Any, compressed: str, reference: str | None
) -> None:
    path = shared_file(compressed)
    data = path.read_bytes()
    body = (b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n")
    response = client.post("/dicomweb/studies", content=body,
                           headers={"Content-Type": 'multipart/related; boundary=b'})
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(data))
    base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")
    wado = client.get(base, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert hashlib.sha256(data).hexdigest() in {
        hashlib.sha256(part).hexdigest() for part in _parts(wado)}
    frame = client.get(f"{base}/frames/1", headers={
        "Accept": 'multipart/related; type="application/octet-stream"'})
    assert frame.status_code == 200
    pixels = _parts(frame)[0]
    expected = dcmread(shared_file(reference)) if reference else ds
    array = expected.pixel_array
    assert np.frombuffer(pixels, dtype=array.dtype).reshape(array.shape).tolist() == \
        array.tolist()
    rendered = client.get(f"{base}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.content[:4] == b"\x89PNG"


def _parts(response: Any) -> list[bytes]:
    from tests.factories import split_multipart

    return [p for _, p in split_multipart(response.content, response.headers["content-type"])]


@pytest.fixture
def s3_services(tmp_path: Path, sqlite_template: Path) -> Iterator[Services]:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test"
                 ).create_bucket(Bucket="archive")
    index = tmp_path / "index.sqlite3"
    shutil.copyfile(sqlite_template, index)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{index}", auto_migrate=False,
        storage_url=f"s3://archive/blobs?endpoint_url={endpoint}&region=us-east-1"
                    "&access_key=test&secret_key=test", security=TEST_SECURITY,
        http=TEST_HTTP)
    yield build_services(settings)
    server.stop()


def test_s3_backend_through_stow_and_wado(s3_services: Services) -> None:
    from fastapi.testclient import TestClient

    from cloudfilm.interfaces.api.http import create_app

    ds = make_ct(size=64)
    data = to_bytes(ds)
    with TestClient(create_app(s3_services)) as client:
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
        stored = client.post("/dicomweb/studies", content=body,
                             headers={"Content-Type": "multipart/related; boundary=b"})
        assert stored.status_code == 200
        base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}")
        wado = client.get(base, headers={"Accept": "multipart/related; "
                                         'type="application/dicom"; transfer-syntax=*'})
        assert _parts(wado) == [data]
        assert client.get(f"{base}/rendered").status_code == 200
        assert client.get("/healthz").json()["blob_store"] == "ok"
