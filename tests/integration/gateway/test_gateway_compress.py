"""Lossless compression at the gateway, as real processes: a PACS C-STOREs uncompressed CT
into ``cloudfilm gateway run`` (``[compress]`` on), the gateway packs it (JPEG-LS, verified
bit-exact) and forwards it; the cloud (``cloudfilm serve`` with its own re-encoding on)
ends with JPEG-LS whose decoded pixels equal the original's, and makes no re-encoding job
for it. What the gateway cannot compress goes as received, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, generate_uid
from sqlalchemy import create_engine, text
from tests.factories import make_ct, to_bytes
from tests.integration.crash.kill9 import Server
from tests.integration.dimse.support import dataset_sha256
from tests.integration.gateway import rig

from cloudfilm.infrastructure.dicom.lossless import pixels_equal

pytestmark = [pytest.mark.commits, pytest.mark.xdist_group("gateway")]

COMPRESS = {"enabled": True, "workers": 1, "nice": 0}


class CompressingServer(Server):
    """The cloud with its own lossless re-encoding on (jobs made at ingest, not run)."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "CLOUDFILM_STORAGE__COMPRESS": "true"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = CompressingServer(tmp_path_factory.mktemp("cloud"))
    server.prepare()
    server.start(timeout=60)
    yield server
    server.stop()


def _smooth(study: str, series: str, k: int, size: int = 128) -> Dataset:
    """A CT slice that compresses (a gradient, a little noise), as modalities send them."""
    ds = make_ct(patient_id="GW-PACK", study_uid=study, series_uid=series,
                 instance_number=k, size=size)
    y, x = np.mgrid[:size, :size]
    noise = np.random.default_rng(k).integers(0, 8, (size, size))
    ds.PixelData = (900 + 3 * x + y + noise).astype(np.uint16).tobytes()
    return ds


def _noise(study: str, series: str) -> Dataset:
    ds = make_ct(patient_id="GW-PACK", study_uid=study, series_uid=series, size=64,
                 instance_number=99, BitsStored=16, HighBit=15)
    ds.PixelData = np.random.default_rng(9).integers(0, 65536, (64, 64),
                                                     dtype=np.uint16).tobytes()
    return ds


def _in_cloud(cloud: Server, sops: list[str]) -> dict[str, tuple[str, bytes, int]]:
    """SOP -> (transfer syntax, stored bytes, storage jobs made for it)."""
    engine = create_engine(f"sqlite:///{cloud.data / 'index.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT sop_instance_uid, transfer_syntax_uid, blob_key FROM instance")).all()
            jobs = dict(conn.execute(text(
                "SELECT sop_instance_uid, COUNT(*) FROM storage_job GROUP BY "
                "sop_instance_uid")).all())
            versions = conn.execute(text("SELECT COUNT(*) FROM instance_version")).scalar()
    finally:
        engine.dispose()
    assert versions == 0
    found = {sop: (ts, (cloud.data / "blobs" / key).read_bytes(), int(jobs.get(sop, 0)))
             for sop, ts, key in rows if sop in sops}
    assert len(found) == len(sops), "an acknowledged object is missing in the cloud"
    return found


def test_c_store_into_the_gateway_arrives_as_jpeg_ls_with_the_same_pixels(
        cloud: Server, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    slices = [_smooth(study, series, k + 1) for k in range(6)]
    noise = _noise(study, series)
    gw = rig.Gateway(tmp_path, f"http://127.0.0.1:{cloud.http_port}", cloud.token,
                     compress=COMPRESS)
    gw.start()
    try:
        sender = rig.Sender(gw.dicom_port)
        sender.send([*slices, noise])
        status = gw.wait_drained(timeout=60)
        assert status["counts"]["sent"] == 7 and status["counts"]["refused"] == 0
    finally:
        gw.stop()
    found = _in_cloud(cloud, [str(ds.SOPInstanceUID) for ds in [*slices, noise]])
    for ds in slices:
        syntax, stored, jobs = found[str(ds.SOPInstanceUID)]
        original = to_bytes(ds)
        assert syntax == JPEGLSLossless
        assert len(stored) < len(original)
        assert pixels_equal(stored, original)
        assert jobs == 0  # the archive has nothing to re-encode
    syntax, stored, jobs = found[str(noise.SOPInstanceUID)]
    # no gain: as received, data set byte for byte (each store writes its own file meta);
    # the archive makes its own job for it (and will find no gain either)
    assert dataset_sha256(stored) == dataset_sha256(to_bytes(noise)) and jobs == 1
    assert syntax != JPEGLSLossless
    assert list(gw.queue_dir.glob("objects/*/*")) == []


def test_gateway_killed_while_packing_loses_nothing(cloud: Server, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    slices = [_smooth(study, series, k + 1, size=256) for k in range(12)]
    gw = rig.Gateway(tmp_path, f"http://127.0.0.1:{cloud.http_port}", cloud.token,
                     compress=COMPRESS)
    gw.start()
    try:
        rig.Sender(gw.dicom_port).send(slices)
        gw.kill()  # acknowledged, most of them not yet packed or sent
        assert list(gw.queue_dir.glob("objects/*/*"))  # still queued when it died
        gw.start()
        gw.wait_drained(timeout=90)
    finally:
        gw.stop()
    found = _in_cloud(cloud, [str(ds.SOPInstanceUID) for ds in slices])
    for ds in slices:
        syntax, stored, _ = found[str(ds.SOPInstanceUID)]
        assert syntax == JPEGLSLossless
        assert pixels_equal(stored, to_bytes(ds))
    assert list(gw.queue_dir.glob("objects/*/*")) == []
