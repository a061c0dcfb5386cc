"""Lossless compression at the gateway (gateway/pack.py): bit-exact or the original goes,
the original stays queued until the packed file is durable, a crash leaves the original.

The packer runs inline here (``pack_some`` without its process pool), so a broken encoder
can be swapped in; the process pool is exercised by the gateway process tests.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless
from tests.factories import make_ct, to_bytes

from cloudfilm.gateway.config import CompressConfig
from cloudfilm.gateway.pack import Packer, packs, policy_of
from cloudfilm.gateway.queue import Queue
from cloudfilm.gateway.scp import dicom_meta
from cloudfilm.gateway.status import render_text, snapshot
from cloudfilm.infrastructure.dicom import lossless

CLAIM = {"batch_size": 20, "batch_bytes": 10**9}


def _smooth_ct(k: int = 1, size: int = 64, **attrs: object) -> bytes:
    """A CT slice that compresses (a gradient with a little noise)."""
    ds = make_ct(instance_number=k, size=size, **attrs)
    y, x = np.mgrid[:size, :size]
    noise = np.random.default_rng(k).integers(0, 4, (size, size))
    ds.PixelData = (1000 + 4 * x + 2 * y + noise).astype(np.uint16).tobytes()
    return to_bytes(ds)


def _noise_ct() -> bytes:
    """16 bits of white noise: no lossless codec makes it smaller."""
    ds = make_ct(size=64, BitsStored=16, HighBit=15)
    ds.PixelData = np.random.default_rng(5).integers(0, 65536, (64, 64),
                                                     dtype=np.uint16).tobytes()
    return to_bytes(ds)


def _queue(tmp_path: Path, config: CompressConfig | None = None) -> Queue:
    config = config or CompressConfig(enabled=True)
    return Queue(tmp_path / "q", quota_bytes=10**9,
                 packs=packs(policy_of(config)) if config.enabled else None,
                 pack_wait_seconds=config.max_wait_seconds)


def _receive(queue: Queue, data: bytes, tmp_path: Path) -> int:
    spooled = queue.spool(data)
    return queue.commit(spooled, dicom_meta(spooled.path, "PACS")).item_id


def _pack_rows(queue: Queue) -> dict[int, tuple[str, str]]:
    return {int(i): (str(s), str(d)) for i, s, d in queue.execute(  # type: ignore[call-overload]
        "SELECT item_id, state, detail FROM pack")}


def _files(queue: Queue) -> set[str]:
    return {p.name for p in (queue.folder / "objects").glob("*/*")}


def test_packed_object_is_jpeg_ls_with_the_same_pixels_and_replaces_the_original(
        tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    original = _smooth_ct()
    item_id = _receive(queue, original, tmp_path)
    # Waiting for the packer: the forwarder does not take it yet.
    assert queue.claim(**CLAIM) == []
    assert queue.next_due() is not None and queue.next_due() > time.time() + 200  # type: ignore[operator]
    packer = Packer(queue, CompressConfig(enabled=True))
    assert packer.pack_some() == 1 and packer.packed == 1
    assert _pack_rows(queue) == {item_id: ("packed", "")}
    [item] = queue.claim(**CLAIM)
    sent = queue.path(item).read_bytes()
    assert dcmread(io.BytesIO(sent)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert lossless.pixels_equal(sent, original)
    assert len(sent) < len(original) and item.size == len(sent)
    # Only the packed file is left; the item keeps the received bytes as its identity.
    assert _files(queue) == {hashlib.sha256(sent).hexdigest()}
    assert item.sha256 == hashlib.sha256(original).hexdigest()
    assert queue.used_bytes() == len(sent)
    # a resend of the original is still a duplicate
    again = queue.commit(queue.spool(original), dicom_meta(queue.spool(original).path, "PACS"))
    assert again.duplicate
    # sent: the packed file goes once the cloud acknowledged it
    queue.mark_sent([item], delete_files=True)
    assert _files(queue) == set()
    assert queue.pack_totals()["packed"] == (1, len(original), len(sent))
    text = render_text(snapshot(queue))
    assert "lossless compression: packed 1," in text and "waiting 0" in text


def test_not_bit_exact_forwards_the_original(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = lossless._ENCODERS[lossless.JPEG_LS]

    def off_by_one(frame: bytes, g: lossless._Geometry) -> bytes:
        changed = bytearray(frame)
        changed[0] ^= 1  # one pixel's low bit: the decoded pixels differ
        return real(bytes(changed), g)

    monkeypatch.setitem(lossless._ENCODERS, lossless.JPEG_LS, off_by_one)
    queue = _queue(tmp_path)
    original = _smooth_ct()
    item_id = _receive(queue, original, tmp_path)
    packer = Packer(queue, CompressConfig(enabled=True))
    assert packer.pack_some() == 1 and packer.left == 1
    assert _pack_rows(queue) == {item_id: ("left", "not-bit-exact")}
    [item] = queue.claim(**CLAIM)
    assert queue.path(item).read_bytes() == original and item.file_sha256 == ""


def test_uncompressible_and_policy_none_forward_the_original(tmp_path: Path) -> None:
    config = CompressConfig(enabled=True, modalities={"us": "none"})
    queue = _queue(tmp_path, config)
    noise = _noise_ct()
    noise_id = _receive(queue, noise, tmp_path)
    us = _smooth_ct(2, Modality="US")
    us_id = _receive(queue, us, tmp_path)
    rtdose = make_ct(size=16, BitsAllocated=32, BitsStored=32, HighBit=31)
    rtdose.PixelData = bytes(16 * 16 * 4)
    dose_id = _receive(queue, to_bytes(rtdose), tmp_path)
    packer = Packer(queue, config)
    assert packer.pack_some() == 2
    # US (policy "none") never waited for the packer
    assert _pack_rows(queue) == {noise_id: ("left", "no-gain"),
                                 dose_id: ("left", "bits-allocated")}
    sent = {}
    while batch := queue.claim(**CLAIM):  # one study per batch
        sent.update({i.id: queue.path(i).read_bytes() for i in batch})
    assert sent == {noise_id: noise, us_id: us, dose_id: to_bytes(rtdose)}


def test_policy_off_is_unchanged(tmp_path: Path) -> None:
    queue = _queue(tmp_path, CompressConfig(enabled=False))
    original = _smooth_ct()
    _receive(queue, original, tmp_path)
    assert _pack_rows(queue) == {}
    assert "compression" not in render_text(snapshot(queue))
    [item] = queue.claim(**CLAIM)
    assert queue.path(item).read_bytes() == original


def test_crash_mid_compression_leaves_the_original_queued(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    original = _smooth_ct()
    item_id = _receive(queue, original, tmp_path)
    [claimed] = queue.claim_pack(10)  # the packer took it ...
    # ... wrote its packed file into place, and died before the row was committed
    stray = queue.folder / "objects" / "ff" / ("f" * 64)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half a packed file")
    queue.close()
    queue = _queue(tmp_path)
    queue.recover()
    assert _pack_rows(queue) == {item_id: ("pending", "")}
    assert _files(queue) == {claimed.sha256}
    assert (queue.folder / claimed.relpath).read_bytes() == original
    assert queue.claim(**CLAIM) == []  # still waiting for the packer
    assert Packer(queue, CompressConfig(enabled=True)).pack_some() == 1
    [item] = queue.claim(**CLAIM)
    assert lossless.pixels_equal(queue.path(item).read_bytes(), original)


def test_compression_turned_off_releases_waiting_objects(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    original = _smooth_ct()
    item_id = _receive(queue, original, tmp_path)
    queue.close()
    queue = _queue(tmp_path, CompressConfig(enabled=False))
    queue.recover()
    assert _pack_rows(queue) == {item_id: ("left", "policy-off")}
    [item] = queue.claim(**CLAIM)
    assert queue.path(item).read_bytes() == original


def test_an_object_that_waited_too_long_goes_as_received(tmp_path: Path) -> None:
    config = CompressConfig(enabled=True, max_wait_seconds=60)
    queue = _queue(tmp_path, config)
    original = _smooth_ct()
    item_id = _receive(queue, original, tmp_path)
    [packing] = queue.claim_pack(10)
    later = time.time() + 61
    [item] = queue.claim(**CLAIM, now=later)  # the packer is behind: the original goes
    assert queue.path(item).read_bytes() == original
    packed = queue.spool(b"packed bytes", quota=False)
    assert not queue.settle_packed(packing, packed, str(JPEGLSLossless))
    assert _pack_rows(queue) == {item_id: ("left", "sent-as-received")}
    assert _files(queue) == {item.sha256} and not packed.path.exists()


def test_a_packed_file_that_cannot_be_written_sends_the_originals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = _queue(tmp_path)
    study = "1.2.3.4"
    originals = [_smooth_ct(k, StudyInstanceUID=study) for k in (1, 2)]
    ids = [_receive(queue, data, tmp_path) for data in originals]

    def disk_full(source: object, *, quota: bool = True) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue, "spool", disk_full)
    with pytest.raises(OSError):
        Packer(queue, CompressConfig(enabled=True)).pack_some()
    assert _pack_rows(queue) == {i: ("left", "error") for i in ids}
    sent = [queue.path(i).read_bytes() for i in queue.claim(**CLAIM)]
    assert sent == originals
