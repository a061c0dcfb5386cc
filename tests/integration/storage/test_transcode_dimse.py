"""C-GET and C-MOVE of a re-encoded object to a peer that accepts only Explicit VR Little
Endian: the archive decodes, and the peer receives the original pixels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEGLSLossless
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from tests.factories import make_ct, to_bytes
from tests.integration.dimse.support import HOSPITAL, SCU_AE, running_server
from tests.integration.dimse.test_dimse_scp import (
    _associate,
    _get_assoc,
    _query,
    _received_bytes,
    _Receiver,
)

from cloudfilm.app import build_services
from cloudfilm.config import Settings, StorageSettings
from cloudfilm.infrastructure.dicom.lossless import pixels_equal
from cloudfilm.services.archive.ingest import Sender

SENDER = Sender(hospital_code=HOSPITAL, hospital_name="Test Hospital", door="test")


@pytest.mark.parametrize("syntax", [JPEGLSLossless, HTJ2KLossless])
def test_peers_accepting_only_explicit_le_receive_the_original_pixels(
        settings: Settings, tmp_path: Path, syntax: str) -> None:
    services = build_services(settings.model_copy(
        update={"storage": StorageSettings(compress=True, delete_grace_seconds=0,
                                           compress_default=syntax)}))
    assert services.storage is not None
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code=HOSPITAL)
    ds = make_ct(size=128)
    original = to_bytes(ds)
    path = tmp_path / "ct.dcm"
    path.write_bytes(original)
    services.ingest.ingest_file(path, sender=SENDER)
    assert services.storage.run_pending() == {"done": 1}
    got: list[bytes] = []

    def keep(event: Any) -> int:
        got.append(_received_bytes(event))
        return 0

    receiver = _Receiver()  # a Storage SCP that accepts only the uncompressed syntaxes
    services.peers.register("DEST", "127.0.0.1", receiver.port, hospital_code=HOSPITAL)
    try:
        with running_server(services) as server:
            assoc = _get_assoc(server, keep)  # C-GET: offers only Explicit VR LE
            final = list(assoc.send_c_get(_query("IMAGE", SOPInstanceUID=ds.SOPInstanceUID),
                                          StudyRootQueryRetrieveInformationModelGet))[-1][0]
            assoc.release()
            assert final.Status == 0 and final.NumberOfCompletedSuboperations == 1
            move = _associate(server, StudyRootQueryRetrieveInformationModelMove)
            done = list(move.send_c_move(_query("IMAGE", SOPInstanceUID=ds.SOPInstanceUID),
                                         "DEST", StudyRootQueryRetrieveInformationModelMove))
            move.release()
            assert done[-1][0].Status == 0
    finally:
        receiver.close()
    moved = list(receiver.received.values())
    for data in [*got, *moved]:
        assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID != syntax
        assert pixels_equal(data, original)
    assert len(got) == 1 and len(moved) == 1
    assert dcmread(io.BytesIO(got[0])).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    services.health._db.dispose()
