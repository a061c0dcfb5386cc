"""STOW-RS bodies sent with ``Content-Encoding: gzip`` (the hospital gateway on a slow link):
stored bit-identical; the upload limit counts decompressed bytes; bombs, corrupt and cut-short
streams and other encodings are refused and store nothing."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from pydicom.uid import generate_uid
from tests.factories import make_ct, multipart, to_bytes


def post(client: Any, body: bytes, content_type: str, encoding: str = "gzip") -> Any:
    return client.post("/dicomweb/studies", content=body,
                       headers={"Content-Type": content_type, "Content-Encoding": encoding})


def nothing_stored(client: Any) -> bool:
    return bool(client.get("/dicomweb/instances").json() == [])


def test_gzip_body_is_stored_bit_identical(client: Any) -> None:
    objects = [to_bytes(make_ct(size=64, instance_number=k)) for k in (1, 2, 3)]
    body, content_type = multipart(objects)
    response = post(client, gzip.compress(body), content_type)
    assert response.status_code == 200, response.text
    for raw in objects:
        import io

        from pydicom import dcmread

        ds = dcmread(io.BytesIO(raw))
        got = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                         f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                         headers={"Accept": 'multipart/related; type="application/dicom"; '
                                            "transfer-syntax=*"})
        assert got.status_code == 200
        assert raw in got.content


def test_a_bare_gzip_object_too(client: Any) -> None:
    raw = to_bytes(make_ct())
    assert post(client, gzip.compress(raw), "application/dicom").status_code == 200


def test_limit_counts_decompressed_bytes(client: Any, services: Any) -> None:
    # Zero pixels: a ~9 KB object gzips below the 2 KiB limit, and must still be refused.
    raw = to_bytes(make_ct(size=64, PixelData=bytes(64 * 64 * 2)))
    body, content_type = multipart([raw])
    packed = gzip.compress(body)
    object.__setattr__(services.limits, "max_upload_bytes", 2048)
    assert len(packed) < 2048 < len(body)
    response = post(client, packed, content_type)
    assert response.status_code == 413
    assert "decompressed" in response.json()["message"]
    assert nothing_stored(client)


def test_decompression_bomb_is_refused_early(client: Any) -> None:
    body, content_type = multipart([to_bytes(make_ct())])
    # A valid start, then 64 MB of zeros: ~64 KB on the wire, 1000:1.
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = bomb.compress(body[:-40]) + bomb.compress(bytes(64 << 20)) + bomb.flush()
    assert len(packed) < 200_000
    response = post(client, packed, content_type)
    assert response.status_code == 413
    assert "bomb" in response.json()["message"]
    assert nothing_stored(client)


def test_corrupt_truncated_and_unknown_encodings_store_nothing(client: Any) -> None:
    body, content_type = multipart([to_bytes(make_ct()), to_bytes(make_ct())])
    packed = gzip.compress(body)
    corrupt = packed[:20] + bytes(b ^ 0x5A for b in packed[20:60]) + packed[60:]
    response = post(client, corrupt, content_type)
    assert response.status_code == 400 and "gzip" in response.json()["message"]
    response = post(client, packed[: len(packed) // 2], content_type)
    assert response.status_code == 400 and "truncated" in response.json()["message"]
    response = post(client, packed + b"trailing junk", content_type)
    assert response.status_code == 400
    response = post(client, packed, content_type, encoding="br")
    assert response.status_code == 415
    # Claiming gzip without it is a corrupt stream, not a silent plain upload.
    assert post(client, body, content_type).status_code == 400
    assert nothing_stored(client)


def test_the_gateway_sends_gzip_and_the_cloud_keeps_each_object(client: Any,
                                                               tmp_path: Any) -> None:
    """The gateway's own sender (forward.send_dicom) against the cloud's door."""
    from cloudfilm.gateway.forward import send_dicom
    from cloudfilm.gateway.queue import Meta, Queue

    queue = Queue(tmp_path / "q", quota_bytes=10 << 20)
    seen: list[str] = []

    def spy(request: Any) -> None:
        seen.append(request.headers.get("content-encoding", ""))

    client.event_hooks["request"].append(spy)
    try:
        study = generate_uid()  # one claim is one study
        objects = [make_ct(size=64, study_uid=study, instance_number=k) for k in (1, 2)]
        for ds in objects:
            queue.commit(queue.spool(to_bytes(ds)),
                         Meta(kind="dicom", uid=str(ds.SOPInstanceUID),
                              study_uid=str(ds.StudyInstanceUID)))
        items = queue.claim(batch_size=10, batch_bytes=10 << 20)
        outcome = send_dicom(client, "/dicomweb", queue, items, gzip=True)
    finally:
        client.event_hooks["request"].remove(spy)
        queue.close()
    assert seen == ["gzip"]
    assert sorted(i.uid for i in outcome.sent) == sorted(str(d.SOPInstanceUID)
                                                         for d in objects)
    assert outcome.refused == [] and outcome.retry == []
