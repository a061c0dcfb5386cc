"""C-STORE of objects the archive holds for reconciliation: dcmtk's storescu and pynetdicom
get Warning 0xB000 with a comment, count the object as stored, and the archive keeps it
out of every record until settled."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.status import code_to_category
from tests.factories import make_ct, to_bytes
from tests.integration.dimse.support import SCP_AE, SCU_AE, require_tool, running_server

from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.container import Services
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR

pytestmark = [pytest.mark.interop]


@pytest.fixture
def scp(services: Services) -> Iterator[DimseServer]:
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code="H-DCMTK")
    with running_server(services) as server:
        yield server


def test_storescu_counts_a_held_object_as_stored(scp: DimseServer, services: Services,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "no-patient-id.dcm"
    path.write_bytes(to_bytes(make_ct(patient_id="", patient_name="Sun^Li")))
    result = subprocess.run(
        [require_tool("storescu"), "-d", "-aet", SCU_AE, "-aec", SCP_AE, "127.0.0.1",
         str(scp.port), str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
    output = result.stdout + result.stderr
    # storescu exits 0 (stored) and reports the warning and our comment
    assert result.returncode == 0, output
    assert "0xb000: Warning" in output, output
    assert "held for reconciliation" in output, output
    queue = services.reconcile
    assert queue is not None
    [item] = queue.list(actor=LOCAL_OPERATOR)
    assert (item.hospital_code, item.reason, item.door) == ("H-DCMTK", "no-patient-id",
                                                           "c-store")
    # a resend over C-STORE adds nothing
    again = subprocess.run(
        [require_tool("storescu"), "-aet", SCU_AE, "-aec", SCP_AE, "127.0.0.1",
         str(scp.port), str(path)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert len(queue.list(actor=LOCAL_OPERATOR)) == 1


def test_pynetdicom_sees_a_warning_with_the_reason(scp: DimseServer, services: Services,
                                                   tmp_path: Path) -> None:
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AE)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(make_ct(patient_id=""))
    finally:
        assoc.release()
    assert status.Status == 0xB000
    assert code_to_category(status.Status) == "Warning"
    assert "held for reconciliation" in str(status.ErrorComment)
