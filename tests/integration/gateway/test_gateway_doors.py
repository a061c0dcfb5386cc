"""The gateway's doors in-process: C-STORE statuses, association control, MLLP, the folder,
and the status figures."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS
from tests.factories import make_ct, to_bytes
from tests.integration.reports.support import oru_r01

from cloudfilm.gateway.config import DicomConfig
from cloudfilm.gateway.queue import Meta, Queue
from cloudfilm.gateway.receivers import FolderWatcher, MllpServer
from cloudfilm.gateway.scp import StoreSCP, handle_store
from cloudfilm.gateway.status import render_text, snapshot


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path / "queue", quota_bytes=4 * 1024 * 1024)


def _event(path: Path, calling: str = "PACS") -> Any:
    requestor = SimpleNamespace(ae_title=calling)
    return SimpleNamespace(dataset_path=path, assoc=SimpleNamespace(requestor=requestor))


def _rows(queue: Queue) -> list[tuple[object, ...]]:
    return queue.execute("SELECT kind, uid, state FROM item ORDER BY id")


def test_c_store_statuses(queue: Queue, tmp_path: Path) -> None:
    ds = make_ct(size=64)
    good = tmp_path / "good.dcm"
    good.write_bytes(to_bytes(ds))
    assert handle_store(_event(good), queue) == 0x0000
    assert handle_store(_event(good), queue) == 0x0000  # a resend: harmless, one row
    assert _rows(queue) == [("dicom", ds.SOPInstanceUID, "received")]
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(good.read_bytes()[:-1000])
    status = handle_store(_event(truncated), queue)
    assert not isinstance(status, int) and status.Status == 0xC000
    assert "pixel data" in status.ErrorComment.lower(), status.ErrorComment
    assert len(_rows(queue)) == 1  # a cut-short object is refused, never queued
    full = Queue(tmp_path / "tiny", quota_bytes=1024 * 1024)
    big = tmp_path / "big.dcm"
    big.write_bytes(to_bytes(make_ct(size=768)))  # ~1.2 MB > the quota
    status = handle_store(_event(big), full)
    assert not isinstance(status, int) and status.Status == 0xA700
    for code in (0x0000, 0xA700, 0xC000):
        assert code in STORAGE_SERVICE_CLASS_STATUS
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


def test_only_configured_ae_titles_may_store(queue: Queue) -> None:
    scp = StoreSCP(DicomConfig(ae_title="GW", host="127.0.0.1", port=0,
                               allowed_ae_titles=["PACS"], timeout=5), queue)
    scp.start()
    try:
        def store(calling: str, called: str = "GW") -> int | None:
            ae = AE(ae_title=calling)
            ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
            assoc = ae.associate("127.0.0.1", scp.port, ae_title=called)
            if not assoc.is_established:
                return None
            status = assoc.send_c_store(make_ct())
            assoc.release()
            return int(status.Status)

        assert store("STRANGER") is None
        assert store("PACS", called="SOMEONE-ELSE") is None
        assert store("pacs") is None  # AE titles compare case-sensitively
        assert store("PACS") == 0x0000
        assert len(_rows(queue)) == 1
    finally:
        scp.stop()


def test_mllp_acknowledges_after_queueing(queue: Queue) -> None:
    import hl7.client

    server = MllpServer(queue, "127.0.0.1", 0)
    server.start()
    try:
        with hl7.client.MLLPClient("127.0.0.1", server.port) as client:
            ok = client.send_message(oru_r01(control_id="C1").encode("utf-8"))
            again = client.send_message(oru_r01(control_id="C1").encode("utf-8"))
            junk = client.send_message(b"this is not HL7")
            no_id = client.send_message(b"MSH|^~\\&|RIS|HA|||20240105||ORU^R01||P|2.5\r")
        assert b"MSA|AA|C1" in ok and b"MSA|AA|C1" in again
        assert b"MSA|AR" in junk and b"MSA|AR" in no_id
        assert _rows(queue) == [("hl7", "C1", "received")]
    finally:
        server.stop()


def test_watched_folder(queue: Queue, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    watcher = FolderWatcher(queue, folder, 0.1)
    folder.mkdir()
    ds = make_ct()
    (folder / "a.dcm").write_bytes(to_bytes(ds))
    (folder / "report.hl7").write_text(oru_r01(control_id="F1"), encoding="utf-8")
    (folder / "junk.txt").write_bytes(b"not DICOM at all" * 20)
    assert watcher.scan() == 0  # first sight: maybe still being written
    (folder / "late.dcm").write_bytes(to_bytes(make_ct()))
    assert watcher.scan() == 3
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["junk.txt", "late.dcm"]
    assert (folder / ".refused" / "junk.txt").exists()
    assert watcher.scan() == 1
    rows = _rows(queue)
    assert sorted(str(r[0]) for r in rows) == ["dicom", "dicom", "hl7"]
    assert {"F1", str(ds.SOPInstanceUID)} <= {str(r[1]) for r in rows}


def test_status_figures_and_the_12_hour_rule(queue: Queue) -> None:
    now = time.time()
    for k, hours_ago in enumerate((1, 7, 13)):
        spooled = queue.spool(f"object {k}".encode())
        queue.commit(spooled, Meta(kind="dicom", uid=f"1.{k}", study_uid=f"S{k}",
                                   exam_at=now - hours_ago * 3600))
    [item] = queue.claim(batch_size=1, batch_bytes=10**6)
    queue.mark_refused(item, "0xC000 unreadable")
    snap = snapshot(queue, now=now)
    assert snap.counts == {"received": 2, "sending": 0, "sent": 0, "refused": 1}
    assert [(r.study_uid, r.late) for r in snap.at_risk] == [("S2", True), ("S1", False)]
    assert [p.reason for p in snap.parked] == ["0xC000 unreadable"]
    text = render_text(snap)
    assert "LATE  S2" in text and "risk  S1" in text and "0xC000 unreadable" in text
