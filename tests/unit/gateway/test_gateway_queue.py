"""The gateway's durable queue: dedup, claims per study, states, quota, recovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudfilm.gateway.queue import Meta, Queue, QuotaExceededError


def _queue(tmp_path: Path, quota: int = 10 * 1024 * 1024) -> Queue:
    return Queue(tmp_path / "q", quota_bytes=quota)


def _put(queue: Queue, data: bytes, uid: str, study: str = "S1", kind: str = "dicom") -> int:
    queued = queue.commit(queue.spool(data), Meta(kind=kind, uid=uid, study_uid=study))  # type: ignore[arg-type]
    return queued.item_id


def _states(queue: Queue) -> dict[str, int]:
    return {str(s): int(n) for s, n in queue.execute(  # type: ignore[call-overload]
        "SELECT state, COUNT(*) FROM item GROUP BY state")}


def test_same_object_twice_is_one_row_and_one_file(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    first = queue.commit(queue.spool(b"A" * 100), Meta(kind="dicom", uid="1.2.3"))
    again = queue.commit(queue.spool(b"A" * 100), Meta(kind="dicom", uid="1.2.3"))
    assert again.duplicate and not first.duplicate and again.item_id == first.item_id
    changed = queue.commit(queue.spool(b"B" * 100), Meta(kind="dicom", uid="1.2.3"))
    assert not changed.duplicate  # a corrected object is a new version, sent too
    assert len(list((tmp_path / "q" / "objects").glob("*/*"))) == 2
    assert list((tmp_path / "q" / "tmp").iterdir()) == []
    assert queue.used_bytes() == 200


def test_claims_hl7_first_then_one_study_per_batch(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for k in range(5):
        _put(queue, f"s1-{k}".encode(), f"1.{k}", study="S1")
    _put(queue, b"s2", "2.1", study="S2")
    _put(queue, b"MSH|report", "CTRL1", kind="hl7", study="")
    batch = queue.claim(batch_size=3, batch_bytes=10**6)
    assert [i.kind for i in batch] == ["hl7"]
    batch = queue.claim(batch_size=3, batch_bytes=10**6)
    assert [i.uid for i in batch] == ["1.0", "1.1", "1.2"]
    assert {i.study_uid for i in queue.claim(batch_size=10, batch_bytes=10**6)} == {"S1"}
    assert [i.uid for i in queue.claim(batch_size=10, batch_bytes=10**6)] == ["2.1"]
    assert queue.claim(batch_size=10, batch_bytes=10**6) == []
    assert _states(queue) == {"sending": 7}
    # A batch never exceeds its byte budget (but always takes one object).
    queue.recover()
    assert [i.uid for i in queue.claim(batch_size=10, batch_bytes=1)][:1] == ["CTRL1"]
    assert len(queue.claim(batch_size=10, batch_bytes=7)) == 1  # objects of 4 bytes


def test_sent_refused_retry_and_recovery(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for k in range(3):
        _put(queue, f"obj-{k}".encode(), f"1.{k}")
    a, b, c = queue.claim(batch_size=10, batch_bytes=10**6)
    queue.mark_sent([a], delete_files=True)
    assert not queue.path(a).exists()  # acknowledged: the local copy goes
    queue.mark_refused(b, "0xC000 not a CT")
    queue.mark_retry([c], "HTTP 503", delay=60)
    assert queue.path(b).exists() and queue.path(c).exists()
    assert queue.claim(batch_size=10, batch_bytes=10**6) == []  # c waits for its backoff
    later = queue.claim(batch_size=10, batch_bytes=10**6, now=time.time() + 61)
    assert [i.uid for i in later] == ["1.2"] and later[0].attempts == 1
    assert _states(queue) == {"sent": 1, "refused": 1, "sending": 1}
    # kill -9 here: the next start puts the interrupted send back.
    queue.close()
    reopened = _queue(tmp_path)
    assert reopened.recover() == 1
    assert _states(reopened) == {"sent": 1, "refused": 1, "received": 1}
    assert reopened.requeue_refused() == 1
    assert _states(reopened) == {"sent": 1, "received": 2}


def test_retry_alone_after_an_unattributed_refusal(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for k in range(3):
        _put(queue, f"obj-{k}".encode(), f"1.{k}")
    batch = queue.claim(batch_size=10, batch_bytes=10**6)
    queue.mark_retry(batch, "HTTP 400", delay=0, solo=True)
    assert [len(queue.claim(batch_size=10, batch_bytes=10**6)) for _ in range(4)] == [1, 1, 1, 0]


def test_keep_sent_files_then_expire(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    _put(queue, b"kept", "1.1")
    items = queue.claim(batch_size=10, batch_bytes=10**6)
    queue.mark_sent(items, delete_files=False)
    assert queue.path(items[0]).exists()
    assert queue.expire_sent(3600) == 0
    assert queue.expire_sent(-1) == 1
    assert not queue.path(items[0]).exists()
    assert queue.used_bytes() == 0


def test_quota_refuses_before_the_disk_fills(tmp_path: Path) -> None:
    queue = _queue(tmp_path, quota=1024 * 1024)
    _put(queue, b"x" * (700 * 1024), "1.1")
    with pytest.raises(QuotaExceededError, match="queue is full"):
        queue.spool(b"y" * (400 * 1024))  # would overfill
    assert list((tmp_path / "q" / "tmp").iterdir()) == []
    _put(queue, b"z" * (324 * 1024), "1.2")  # exactly the quota
    with pytest.raises(QuotaExceededError):
        queue.spool(b"w")  # full
    sent = queue.claim(batch_size=10, batch_bytes=10**9)
    queue.mark_sent(sent, delete_files=True)
    _put(queue, b"w", "1.3")  # room again once the cloud took them


def test_recover_removes_files_without_a_row(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    _put(queue, b"kept", "1.1")
    orphan = tmp_path / "q" / "objects" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir()
    orphan.write_bytes(b"renamed, row never committed")
    (tmp_path / "q" / "tmp" / "x.part").write_bytes(b"half")
    queue.recover()
    assert not orphan.exists()
    assert list((tmp_path / "q" / "tmp").iterdir()) == []
    assert len(list((tmp_path / "q" / "objects").glob("*/*"))) == 1
