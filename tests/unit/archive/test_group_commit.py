"""GroupCommit: concurrent callers share batches, each gets its own result, none is lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cloudfilm.services.archive.group_commit import GroupCommit
from cloudfilm.services.kernel.sender import Sender

A, B = Sender(hospital_code="A"), Sender(hospital_code="B")


def test_concurrent_items_share_batches_and_get_their_own_results() -> None:
    batches: list[tuple[str, list[int]]] = []
    gate = threading.Event()

    def ingest_files(items: list[int], *, sender: Sender) -> list[Any]:
        gate.wait(5)  # hold the first batch so that the others queue up behind it
        batches.append((sender.hospital_code, list(items)))
        time.sleep(0.01)
        return [f"{sender.hospital_code}{i}" for i in items]

    group = GroupCommit(ingest_files, max_batch=8)
    with ThreadPoolExecutor(12) as pool:
        futures = {i: pool.submit(group.ingest, i, A if i % 2 else B) for i in range(12)}
        time.sleep(0.2)
        gate.set()
        results = {i: f.result(timeout=10) for i, f in futures.items()}
    assert results == {i: f"{'A' if i % 2 else 'B'}{i}" for i in range(12)}
    assert sorted(i for _, items in batches for i in items) == list(range(12))
    assert len(batches) < 12, "nothing was batched"
    assert all(len(items) <= 8 for _, items in batches)


def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def ingest_files(items: list[int], *, sender: Sender) -> list[Any]:
        raise RuntimeError("index down")

    group = GroupCommit(ingest_files)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(group.ingest, i, A) for i in range(3)]
        for future in futures:
            with pytest.raises(RuntimeError, match="index down"):
                future.result(timeout=10)
    # and the group still works afterwards
    group2 = GroupCommit(lambda items, sender: list(items))
    assert group2.ingest(7, A) == 7
