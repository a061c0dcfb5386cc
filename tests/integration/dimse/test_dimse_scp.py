"""The DIMSE door over loopback with a pynetdicom SCU, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom import status as pn_status
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import create_engine, text
from tests.factories import make_ct, to_bytes
from tests.integration.dimse.support import (
    HOSPITAL,
    SCP_AE,
    SCU_AE,
    dataset_sha256,
    free_port,
)

from cloudfilm.interfaces.dimse import sending, transport
from cloudfilm.interfaces.dimse import status as st
from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.container import Services
from cloudfilm.services.errors import (
    InstanceConflictError,
    InvalidInstanceError,
    InvalidQueryError,
    NotAuthorizedError,
    ResourceUnavailableError,
    UnknownDestinationError,
    UnsupportedSOPClassError,
)


def _scu(*contexts: Any, ae_title: str = SCU_AE) -> AE:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for cx in contexts:
        ae.add_requested_context(cx)
    return ae


def _associate(server: DimseServer, *contexts: Any, ae_title: str = SCU_AE, **kw: Any) -> Any:
    assoc = _scu(*contexts, ae_title=ae_title).associate(
        "127.0.0.1", server.port, ae_title=SCP_AE, **kw)
    return assoc


def _store(server: DimseServer, *datasets: Dataset) -> list[Dataset]:
    assoc = _associate(server, CTImageStorage)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def _series(n: int = 3, **kw: Any) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    return [make_ct(study_uid=study, series_uid=series, instance_number=i + 1, **kw)
            for i in range(n)]


# -- association control ---------------------------------------------------------------


def test_echo_from_registered_peer(dimse: DimseServer) -> None:
    assoc = _associate(dimse, Verification)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_unknown_calling_ae_is_rejected_with_reason(dimse: DimseServer) -> None:
    assoc = _associate(dimse, Verification, ae_title="STRANGER")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    # rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized (PS3.8 9.3.4)
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    # and the listener keeps serving registered peers
    ok = _associate(dimse, Verification)
    assert ok.is_established
    ok.release()


def test_peer_registered_after_start_is_accepted(dimse: DimseServer,
                                                 services: Services) -> None:
    services.peers.register("LATECOMER", "127.0.0.1", 104, hospital_code="H-LATE")
    assoc = _associate(dimse, Verification, ae_title="LATECOMER")
    assert assoc.is_established
    assoc.release()
    services.peers.remove("LATECOMER")
    assert _associate(dimse, Verification, ae_title="LATECOMER").is_rejected


def test_unsupported_presentation_context_is_rejected(dimse: DimseServer) -> None:
    ae = _scu()
    ae.add_requested_context(CTImageStorage, ["1.2.3.4.5.6.7"])  # unknown transfer syntax
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=SCP_AE)
    assert assoc.is_established
    assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [CTImageStorage]
    assoc.release()


# -- C-STORE ---------------------------------------------------------------------------


def test_store_records_sending_hospital_and_is_durable(dimse: DimseServer, services: Services,
                                                       settings: Any) -> None:
    datasets = _series(2)
    statuses = _store(dimse, *datasets)
    assert [s.Status for s in statuses] == [0, 0]
    objs = services.retrieve.locate(datasets[0].StudyInstanceUID, actor=LOCAL_OPERATOR)
    assert len(objs) == 2
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        codes = conn.execute(text(
            "SELECT DISTINCT h.code FROM instance i JOIN hospital h ON h.id = i.hospital_id"
        )).scalars().all()
    engine.dispose()
    assert codes == [HOSPITAL]
    # the same object again is a duplicate, still Success
    assert _store(dimse, datasets[0])[0].Status == 0


def test_a_received_data_set_is_spooled_beside_the_blobs(
        dimse: DimseServer, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    # The DUL thread writes it there itself (receiving.py), so ingest links it into place.
    # It also hashes it as it writes it: ingest gets the file's SHA-256 with it.
    ingest = services.ingest.ingest_file_grouped
    spooled: list[Path] = []
    digests: list[tuple[str | None, str]] = []

    def record(path: Path, **kw: Any) -> Any:
        spooled.append(Path(path))
        digests.append((kw.get("sha256"), hashlib.sha256(Path(path).read_bytes()).hexdigest()))
        return ingest(path, **kw)

    monkeypatch.setattr(services.ingest, "ingest_file_grouped", record)
    datasets = _series(2)
    assert [s.Status for s in _store(dimse, *datasets)] == [0, 0]
    assert [p.parent for p in spooled] == [services.spool_dir] * 2
    assert all(given == actual for given, actual in digests) and len(digests) == 2
    assert not list(services.spool_dir.iterdir())
    stored = services.retrieve.locate(datasets[0].StudyInstanceUID, actor=LOCAL_OPERATOR)
    assert len(stored) == 2


def test_a_data_set_that_cannot_be_spooled_is_out_of_resources(
        dimse: DimseServer, services: Services, tmp_path: Path) -> None:
    listener = dimse._server
    assert isinstance(listener, transport.ReusePortServer)
    listener.spool_dir = tmp_path / "gone"  # as a full or vanished disk fails the write
    rsp = _store(dimse, make_ct())[0]
    assert rsp.Status == st.OUT_OF_RESOURCES
    assert "could not write" in rsp.ErrorComment


def test_store_missing_uid_fails_with_reason(dimse: DimseServer, services: Services) -> None:
    ds = make_ct()
    del ds.StudyInstanceUID
    rsp = _store(dimse, ds)[0]
    assert rsp.Status == st.CANNOT_UNDERSTAND
    assert "StudyInstanceUID is missing" in rsp.ErrorComment
    assert not list(services.spool_dir.iterdir())


def test_store_of_sr_files_its_report_and_refuses_a_malformed_one(
        dimse: DimseServer, services: Services) -> None:
    from pynetdicom.sop_class import ComprehensiveSRStorage
    from tests.factories import make_text_sr

    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    good = make_text_sr(findings="左肺下叶见斑片影。")
    bad = make_text_sr()
    del bad.ContentSequence
    assoc = _associate(dimse, ComprehensiveSRStorage)
    assert assoc.is_established
    try:
        ok, refused = assoc.send_c_store(good), assoc.send_c_store(bad)
    finally:
        assoc.release()
    assert ok.Status == 0
    [report] = services.reports.study_reports(str(good.StudyInstanceUID), actor=LOCAL_OPERATOR)
    assert "左肺下叶见斑片影" in report.findings
    assert refused.Status == st.DATASET_MISMATCH
    assert "ContentSequence" in refused.ErrorComment


def test_store_missing_patient_id_is_held_with_a_warning(dimse: DimseServer) -> None:
    # Stored for the reconciliation queue (issue 12): a warning, never a failure.
    rsp = _store(dimse, make_ct(patient_id=""))[0]
    assert rsp.Status == st.HELD_WARNING
    assert "PatientID" in rsp.ErrorComment


@pytest.mark.parametrize(("exc", "status"), [
    (InvalidInstanceError("broken header"), 0xC000),
    (InvalidInstanceError("wrong study", code="study-mismatch"), 0xA900),
    (UnsupportedSOPClassError("not storage"), 0x0122),
    (NotAuthorizedError("no grant"), 0x0124),
    (ResourceUnavailableError("disk full"), 0xA700),
    (InstanceConflictError("uid reused"), 0x0110),
    (RuntimeError("bug"), 0xC211),
])
def test_store_raises_to_status(dimse: DimseServer, services: Services,
                                monkeypatch: pytest.MonkeyPatch, exc: Exception,
                                status: int) -> None:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise exc

    monkeypatch.setattr(services.ingest, "ingest_file_grouped", fail)
    rsp = _store(dimse, make_ct())[0]
    assert rsp.Status == status
    assert rsp.ErrorComment
    if isinstance(exc, RuntimeError):
        assert "bug" not in rsp.ErrorComment  # internals stay in the log


def test_abort_mid_transfer_leaves_nothing(services: Services, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    from tests.integration.dimse.support import running_server

    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code=HOSPITAL)
    incoming = tmp_path / "pynetdicom-tmp"
    incoming.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(incoming))
    ds = make_ct(size=512)
    sent = []

    def cut(event: Any) -> None:
        sent.append(1)
        if len(sent) == 6:  # A-ASSOCIATE-RQ, command, then part of the data set
            event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)

    with running_server(services, max_pdu=16384) as server:
        ae = _scu(CTImageStorage)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=SCP_AE,
                             evt_handlers=[(evt.EVT_PDU_SENT, cut)])
        assert assoc.is_established
        with pytest.raises(Exception):  # noqa: B017 - any send error will do
            rsp = assoc.send_c_store(ds)
            assert not rsp  # no response arrives: treat as the failure we expect
            raise RuntimeError("no response")
        assoc.abort()
        deadline = time.monotonic() + 5
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(incoming.iterdir()) == []
        assert list(services.spool_dir.iterdir()) == []
        # the listener keeps running
        ok = _associate(server, Verification)
        assert ok.is_established
        ok.release()
    from cloudfilm.services.errors import NotFoundError

    with pytest.raises(NotFoundError):
        services.retrieve.locate(ds.StudyInstanceUID, actor=LOCAL_OPERATOR)


# -- C-FIND ----------------------------------------------------------------------------


def _find(server: DimseServer, identifier: Dataset,
          model: Any = StudyRootQueryRetrieveInformationModelFind) -> list[tuple[int, Any]]:
    assoc = _associate(server, model)
    assert assoc.is_established
    try:
        return [(status.Status, ident) for status, ident in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


def _query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_find_every_level_and_model(dimse: DimseServer) -> None:
    datasets = _series(3, patient_id="PID-77", patient_name="Wang^XiaoDong=王^小东")
    _store(dimse, *datasets)
    study_uid = datasets[0].StudyInstanceUID

    found = _find(dimse, _query("STUDY", PatientName="王", StudyInstanceUID="",
                                ModalitiesInStudy="", NumberOfStudyRelatedInstances="",
                                StudyComments=""))
    assert [s for s, _ in found] == [0xFF00, 0x0000]
    ident = found[0][1]
    assert ident.StudyInstanceUID == study_uid
    assert ident.NumberOfStudyRelatedInstances == 3
    assert ident.ModalitiesInStudy == "CT"
    assert "StudyComments" in ident and not ident.StudyComments  # requested, no value
    assert "PatientID" not in ident  # only requested keys come back

    series = _find(dimse, _query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="",
                                 Modality="CT", NumberOfSeriesRelatedInstances=""))
    assert series[0][1].NumberOfSeriesRelatedInstances == 3

    images = _find(dimse, _query("IMAGE", StudyInstanceUID=study_uid, SOPInstanceUID="",
                                 InstanceNumber="2", ImagePositionPatient=""))
    assert len(images) == 2
    assert images[0][1].SOPInstanceUID == datasets[1].SOPInstanceUID
    assert [float(v) for v in images[0][1].ImagePositionPatient] == [0, 0, 2]

    patients = _find(dimse, _query("PATIENT", PatientID="PID-77", PatientName="",
                                   NumberOfPatientRelatedStudies=""),
                     PatientRootQueryRetrieveInformationModelFind)
    assert patients[0][1].PatientName.ideographic == "王^小东"
    assert patients[0][1].NumberOfPatientRelatedStudies == 1

    wildcard = _find(dimse, _query("STUDY", PatientID="PID-7*", StudyDate="20240101-20241231",
                                   StudyInstanceUID=""))
    assert len(wildcard) == 2
    none = _find(dimse, _query("STUDY", PatientID="NOBODY", StudyInstanceUID=""))
    assert [s for s, _ in none] == [0x0000]


def test_find_bad_identifier(dimse: DimseServer) -> None:
    assert _find(dimse, _query("WARD", PatientID=""))[0][0] == 0xA900
    assert _find(dimse, _query("PATIENT", PatientID=""))[0][0] == 0xA900  # not in Study Root
    bad_date = _find(dimse, _query("STUDY", StudyDate="yesterday"))
    assert bad_date[0][0] == 0xA900


@pytest.mark.parametrize(("exc", "status"), [
    (InvalidQueryError("bad"), 0xA900),
    (ResourceUnavailableError("db down"), 0xA700),
    (NotAuthorizedError("no grant"), 0x0124),
    (RuntimeError("bug"), 0xC311),
])
def test_find_raises_to_status(dimse: DimseServer, services: Services,
                               monkeypatch: pytest.MonkeyPatch, exc: Exception,
                               status: int) -> None:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise exc

    monkeypatch.setattr(services.query, "search", fail)
    assoc = _associate(dimse, StudyRootQueryRetrieveInformationModelFind)
    responses = list(assoc.send_c_find(_query("STUDY", PatientID="X"),
                                       StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    assert responses[0][0].Status == status
    assert responses[0][0].ErrorComment


# -- C-MOVE and C-GET ------------------------------------------------------------------


def _received_bytes(event: Any) -> bytes:
    # configure_dicom_libraries() turned on chunked receive for this whole test process.
    try:
        return Path(event.dataset_path).read_bytes()
    except AttributeError:
        return bytes(event.encoded_dataset(include_meta=True))


class _Receiver:
    """A pynetdicom Storage SCP that keeps what it receives, as the bytes on the wire."""

    def __init__(self) -> None:
        self.received: dict[str, bytes] = {}
        ae = AE(ae_title="DEST")
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: Any) -> int:
        data = _received_bytes(event)
        self.received[dcmread(io.BytesIO(data)).SOPInstanceUID] = data
        return 0

    def close(self) -> None:
        self.server.shutdown()


def test_move_to_registered_destination_bit_identical(dimse: DimseServer,
                                                      services: Services) -> None:
    datasets = _series(4)
    _store(dimse, *datasets)
    receiver = _Receiver()
    services.peers.register("DEST", "127.0.0.1", receiver.port, hospital_code="H-DEST")
    try:
        assoc = _associate(dimse, StudyRootQueryRetrieveInformationModelMove)
        ident = _query("STUDY", StudyInstanceUID=datasets[0].StudyInstanceUID)
        responses = [s for s, _ in assoc.send_c_move(
            ident, "DEST", StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        receiver.close()
    # Pending responses are optional (PS3.4 C.4.2.3.1): the first is sent, then at most one
    # per transport.PENDING_INTERVAL; each tells the truth, and the final one has every count.
    pending, final = responses[:-1], responses[-1]
    assert pending and all(r.Status == 0xFF00 for r in pending)
    remaining = [r.NumberOfRemainingSuboperations for r in pending]
    assert remaining[0] == 3 and remaining == sorted(remaining, reverse=True)
    assert all(r.NumberOfRemainingSuboperations + r.NumberOfCompletedSuboperations == 4
               for r in pending)
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 4
    for ds in datasets:
        assert dataset_sha256(receiver.received[ds.SOPInstanceUID]) == \
            dataset_sha256(to_bytes(ds))


@pytest.mark.parametrize("queued", [False, True], ids=["written", "queued"])
def test_move_counts_each_sub_operation_status_as_the_destination_answered(
        dimse: DimseServer, services: Services, monkeypatch: pytest.MonkeyPatch,
        queued: bool) -> None:
    """The sub-association's thread reads plain C-STORE responses itself (issue 12); one
    with an Error Comment goes pynetdicom's way in the middle of the series. Warnings and
    failures are counted in the final C-MOVE response either way. "queued": each request
    goes out through the DUL thread (as after a message pynetdicom encoded) while the
    sending thread waits for its response."""
    if queued:
        monkeypatch.setattr(transport._WakingDUL, "_queued_pdata", True)
    datasets = _series(5)
    _store(dimse, *datasets)
    answers = {datasets[1].SOPInstanceUID: 0xB000, datasets[2].SOPInstanceUID: 0xA700,
               datasets[3].SOPInstanceUID: 0xC000}
    read_directly: list[Any] = []
    original = transport.AdoptedEventDrivenDUL.read_store_response

    def counted(self: Any, timeout: float | None) -> Any:
        found = original(self, timeout)
        read_directly.append(found)
        return found

    monkeypatch.setattr(transport.AdoptedEventDrivenDUL, "read_store_response", counted)

    def store(event: Any) -> Any:
        uid = dcmread(io.BytesIO(_received_bytes(event))).SOPInstanceUID
        status = Dataset()
        status.Status = answers.get(uid, 0)
        if status.Status == 0xC000:
            status.ErrorComment = "refused here"
        return status

    ae = AE(ae_title="DEST")
    # As stored (the archive deflates it): sent from the file, not re-encoded.
    ae.add_supported_context(CTImageStorage, [DeflatedExplicitVRLittleEndian,
                                              ExplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, store)])
    services.peers.register("DEST", "127.0.0.1", port, hospital_code="H-DEST")
    try:
        assoc = _associate(dimse, StudyRootQueryRetrieveInformationModelMove)
        ident = _query("STUDY", StudyInstanceUID=datasets[0].StudyInstanceUID)
        responses = list(assoc.send_c_move(ident, "DEST",
                                           StudyRootQueryRetrieveInformationModelMove))
        assoc.release()
    finally:
        server.shutdown()
    final, identifier = responses[-1]
    assert final.Status == 0xB000  # sub-operations failed or warned
    assert final.NumberOfCompletedSuboperations == 2
    assert final.NumberOfWarningSuboperations == 1
    assert final.NumberOfFailedSuboperations == 2
    failed = identifier.FailedSOPInstanceUIDList
    failed = [failed] if isinstance(failed, str) else list(failed)
    assert sorted(failed) == sorted([datasets[2].SOPInstanceUID, datasets[3].SOPInstanceUID])
    # Read directly: four plain responses; the one with an Error Comment was put back.
    assert len(read_directly) == 5
    assert sorted(r[2] for r in read_directly if r is not None) == [0, 0, 0xA700, 0xB000]
    assert read_directly.count(None) == 1


def test_move_unknown_destination(dimse: DimseServer) -> None:
    _store(dimse, make_ct())
    assoc = _associate(dimse, StudyRootQueryRetrieveInformationModelMove)
    responses = list(assoc.send_c_move(_query("STUDY", StudyInstanceUID="1.2.3"), "NOWHERE",
                                       StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    assert responses[0][0].Status == st.MOVE_UNKNOWN_DESTINATION


def test_move_missing_unique_key(dimse: DimseServer, services: Services) -> None:
    receiver = _Receiver()
    services.peers.register("DEST", "127.0.0.1", receiver.port, hospital_code="H-DEST")
    try:
        assoc = _associate(dimse, StudyRootQueryRetrieveInformationModelMove)
        responses = list(assoc.send_c_move(_query("SERIES", StudyInstanceUID="1.2"), "DEST",
                                           StudyRootQueryRetrieveInformationModelMove))
        assoc.release()
    finally:
        receiver.close()
    assert responses[-1][0].Status == 0xA900
    assert "SeriesInstanceUID" in responses[-1][0].ErrorComment


def _get_assoc(server: DimseServer, handler: Any) -> Any:
    ae = _scu(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    role = build_role(CTImageStorage, scp_role=True)
    return ae.associate("127.0.0.1", server.port, ae_title=SCP_AE, ext_neg=[role],
                        evt_handlers=[(evt.EVT_C_STORE, handler)])


def test_get_series_and_image_level(dimse: DimseServer) -> None:
    datasets = _series(3)
    _store(dimse, *datasets)
    got: list[bytes] = []

    def keep(event: Any) -> int:
        got.append(_received_bytes(event))
        return 0

    assoc = _get_assoc(dimse, keep)
    ident = _query("SERIES", SeriesInstanceUID=datasets[0].SeriesInstanceUID)
    final = list(assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet))[-1][0]
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 3
    ident = _query("IMAGE", SOPInstanceUID=datasets[1].SOPInstanceUID)
    final = list(assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet))[-1][0]
    assoc.release()
    assert final.NumberOfCompletedSuboperations == 1
    assert sorted(dataset_sha256(b) for b in got) == sorted(
        dataset_sha256(to_bytes(d)) for d in [*datasets, datasets[1]])


@pytest.mark.parametrize("stream_above", [0, transport.STREAM_ABOVE])
def test_get_sends_the_stored_bytes_in_the_peers_pdu_size(
        dimse: DimseServer, services: Services, monkeypatch: pytest.MonkeyPatch,
        stream_above: int) -> None:
    """Sent from the stored file in one write (or, above STREAM_ABOVE, pynetdicom's
    fragment-by-fragment way), in PDUs no larger than the peer takes: the data set arrives
    as stored, byte for byte."""
    monkeypatch.setattr(transport, "STREAM_ABOVE", stream_above)
    datasets = _series(2)
    _store(dimse, *datasets)
    got: list[bytes] = []
    from_files: list[str] = []
    send_stored = sending.FileSendingAssociation._send_stored

    def spy(assoc: Any, stored: Any, *args: Any, **kwargs: Any) -> Any:
        from_files.append(stored.sop_instance_uid)
        return send_stored(assoc, stored, *args, **kwargs)

    monkeypatch.setattr(sending.FileSendingAssociation, "_send_stored", spy)

    def keep(event: Any) -> int:
        got.append(_received_bytes(event))
        return 0

    ae = _scu(StudyRootQueryRetrieveInformationModelGet)
    ae.maximum_pdu_size = 4096  # a 512x512 CT is then over a hundred P-DATA-TF PDUs
    # The syntax these objects are stored in (the storing SCU offered it, we prefer it).
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=SCP_AE,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, keep)])
    ident = _query("SERIES", SeriesInstanceUID=datasets[0].SeriesInstanceUID)
    final = list(assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet))[-1][0]
    assoc.release()
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 2
    # From the stored files, not decoded and encoded again (our acceptor's class was
    # once not recognised as one that can send files).
    assert sorted(from_files) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    stored = {}
    for ds in datasets:
        [obj] = [o for o in services.retrieve.locate(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, actor=LOCAL_OPERATOR)
            if o.sop_instance_uid == ds.SOPInstanceUID]
        path = services.retrieve.stored_path(obj)
        assert path is not None
        stored[str(ds.SOPInstanceUID)] = _data_set_part(path.read_bytes())
    assert {str(dcmread(io.BytesIO(b)).SOPInstanceUID): _data_set_part(b) for b in got} \
        == stored
    assert all(dcmread(io.BytesIO(b)).file_meta.TransferSyntaxUID
               == DeflatedExplicitVRLittleEndian for b in got)


def _data_set_part(part10: bytes) -> bytes:
    """The bytes after a Part 10 file's File Meta group."""
    meta_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_length:]


def test_get_can_be_cancelled(dimse: DimseServer) -> None:
    datasets = _series(6)
    _store(dimse, *datasets)
    state: dict[str, Any] = {"n": 0}

    def cancel_after_first(event: Any) -> int:
        state["n"] += 1
        if state["n"] == 1:
            event.assoc.send_c_cancel(1, state["cx"])
        return 0

    assoc = _get_assoc(dimse, cancel_after_first)
    state["cx"] = next(cx.context_id for cx in assoc.accepted_contexts
                       if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
    ident = _query("STUDY", StudyInstanceUID=datasets[0].StudyInstanceUID)
    final = list(assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet,
                                  msg_id=1))[-1][0]
    assoc.release()
    assert final.Status == st.CANCEL
    assert state["n"] < 6


@pytest.mark.parametrize(("exc", "status"), [
    (InvalidQueryError("bad"), 0xA900),
    (ResourceUnavailableError("db down"), 0xA701),
    (RuntimeError("bug"), 0xC611),
])
def test_get_raises_to_status(dimse: DimseServer, services: Services,
                              monkeypatch: pytest.MonkeyPatch, exc: Exception,
                              status: int) -> None:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise exc

    monkeypatch.setattr(services.retrieve, "locate", fail)
    assoc = _get_assoc(dimse, lambda e: 0)
    final = list(assoc.send_c_get(_query("STUDY", StudyInstanceUID="1.2.3"),
                                  StudyRootQueryRetrieveInformationModelGet))[-1][0]
    assoc.release()
    assert final.Status == status
    assert final.ErrorComment


# -- several associations, shutdown ----------------------------------------------------


def test_parallel_associations_and_clean_shutdown(services: Services) -> None:
    from tests.integration.dimse.support import running_server

    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code=HOSPITAL)
    results: list[int] = []
    with running_server(services) as server:
        def push() -> None:
            results.extend(s.Status for s in _store(server, *_series(3)))

        threads = [threading.Thread(target=push) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        idle = _associate(server, Verification)  # an association left open at shutdown
        assert idle.is_established
        port = server.port
        server.stop(grace=0.5)
        deadline = time.monotonic() + 3
        while idle.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not idle.is_established  # aborted after the grace period
        refused = _scu(Verification).associate("127.0.0.1", port, ae_title=SCP_AE)
        assert not refused.is_established
    assert results == [0] * 12


# -- the status map --------------------------------------------------------------------


def test_every_mapped_status_is_a_known_code() -> None:
    store = [st.store_failure_status(e) for e in _errors()]
    find = [st.find_failure_status(e) for e in _errors()]
    move = [st.retrieve_failure_status(e, service="move") for e in _errors()]
    get = [st.retrieve_failure_status(e, service="get") for e in _errors()]
    assert set(store) <= set(pn_status.STORAGE_SERVICE_CLASS_STATUS)
    assert set(find) <= set(pn_status.QR_FIND_SERVICE_CLASS_STATUS)
    assert set(move) <= set(pn_status.QR_MOVE_SERVICE_CLASS_STATUS)
    assert set(get) <= set(pn_status.QR_GET_SERVICE_CLASS_STATUS)
    assert {st.CANCEL, st.SUCCESS} <= set(pn_status.QR_FIND_SERVICE_CLASS_STATUS)


def _errors() -> list[BaseException]:
    return [InvalidInstanceError("x"), InvalidInstanceError("x", code="study-mismatch"),
            UnsupportedSOPClassError("x"), NotAuthorizedError("x"),
            ResourceUnavailableError("x"), InstanceConflictError("x"), InvalidQueryError("x"),
            UnknownDestinationError("x"), RuntimeError("x")]
