"""Orthanc (Debian 1.10) as a hospital PACS: it pushes studies to us and receives a C-MOVE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove
from tests.conftest import shared_file
from tests.integration.dimse.support import (
    SCP_AE,
    SCU_AE,
    dataset_sha256,
    free_port,
    require_tool,
    running_server,
)

from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.container import Services

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

FILES = ["ct/CT_small.dcm", "compressed/CT_RLE_multiple_fragments.dcm",
         "compressed/US1_J2KR.dcm"]
ORTHANC_AE = "ORTHANC"


@pytest.fixture
def scp(services: Services) -> Iterator[DimseServer]:
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code="H-SCU")
    with running_server(services) as server:
        yield server


@pytest.fixture
def orthanc(scp: DimseServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    exe = require_tool("Orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "interop", "StorageDirectory": str(tmp_path / "orthanc"),
        "IndexDirectory": str(tmp_path / "orthanc"), "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomPort": dicom_port, "DicomAet": ORTHANC_AE,
        "TcpNoDelay": True, "DicomCheckCalledAet": False,
        "DicomModalities": {"cloudfilm": [SCP_AE, "127.0.0.1", scp.port]},
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([exe, str(path)], env={**os.environ, "TCP_NODELAY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("Orthanc did not start")
            time.sleep(0.2)
        yield {"base": base, "dicom_port": dicom_port}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_orthanc_pushes_and_receives_a_move(scp: DimseServer, services: Services,
                                            orthanc: dict[str, Any]) -> None:
    base = orthanc["base"]
    # Orthanc is a second AE of the SCU's hospital: a hospital system retrieves only the
    # studies its hospital produced (services/access/policy.py).
    services.peers.register(ORTHANC_AE, "127.0.0.1", orthanc["dicom_port"],
                            hospital_code="H-SCU", description="Orthanc hospital")
    files = [shared_file(f) for f in FILES]
    ids = [httpx.post(f"{base}/instances", content=f.read_bytes()).json()["ID"] for f in files]
    job = httpx.post(f"{base}/modalities/cloudfilm/store", json=ids, timeout=60)
    assert job.status_code == 200, job.text

    stored: dict[str, str] = {}
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        obj = services.retrieve.locate(str(ds.StudyInstanceUID), None, str(ds.SOPInstanceUID),
                                   actor=LOCAL_OPERATOR)[0]
        stored[obj.sop_instance_uid] = dataset_sha256(
            b"".join(services.retrieve.object_chunks(obj)))
        assert obj.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID  # kept as sent

    for instance in ids:  # empty Orthanc, then pull everything back with C-MOVE
        httpx.delete(f"{base}/instances/{instance}")
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AE)
    for study in {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = study
        final = list(assoc.send_c_move(ident, ORTHANC_AE,
                                       StudyRootQueryRetrieveInformationModelMove))[-1][0]
        assert final.Status == 0x0000
    assoc.release()
    received = {}
    for instance in httpx.get(f"{base}/instances").json():
        data = httpx.get(f"{base}/instances/{instance}/file").content
        received[str(dcmread(__import__("io").BytesIO(data)).SOPInstanceUID)] = \
            dataset_sha256(data)
    assert received == stored
