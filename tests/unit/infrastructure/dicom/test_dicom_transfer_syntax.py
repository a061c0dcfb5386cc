"""Transfer syntax table: WADO-RS frame media types (PS3.18 Tables 8.7.3-4/5), decodability."""

from __future__ import annotations

import pytest

from cloudfilm.infrastructure.dicom import transfer_syntax as ts

MEDIA_TYPES = {
    "1.2.840.10008.1.2": "application/octet-stream",
    "1.2.840.10008.1.2.1": "application/octet-stream",
    "1.2.840.10008.1.2.1.99": "application/octet-stream",
    "1.2.840.10008.1.2.2": "application/octet-stream",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    # PS3.18 Table 8.7.3-5 lists image/jpeg for the lossless JPEG processes too ("image/jll"
    # is a dcm4chee/Cornerstone convention, not the standard's).
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


@pytest.mark.parametrize(("uid", "media_type"), sorted(MEDIA_TYPES.items()))
def test_frame_media_type(uid: str, media_type: str) -> None:
    assert ts.frame_media_type(uid) == media_type


def test_padding_is_ignored() -> None:
    assert ts.frame_media_type("1.2.840.10008.1.2.4.50\x00") == "image/jpeg"
    assert ts.get("1.2.840.10008.1.2.5 ") is not None


@pytest.mark.parametrize(
    ("uid", "compressed", "lossy"),
    [
        ("1.2.840.10008.1.2.1", False, False),
        ("1.2.840.10008.1.2.4.50", True, True),
        ("1.2.840.10008.1.2.4.57", True, False),
        ("1.2.840.10008.1.2.4.70", True, False),
        ("1.2.840.10008.1.2.4.80", True, False),
        ("1.2.840.10008.1.2.4.81", True, True),
        ("1.2.840.10008.1.2.4.90", True, False),
        ("1.2.840.10008.1.2.4.91", True, True),
        ("1.2.840.10008.1.2.5", True, False),
    ],
)
def test_compression_flags(uid: str, compressed: bool, lossy: bool) -> None:
    assert ts.is_compressed(uid) is compressed
    assert ts.is_lossy(uid) is lossy


def test_table_is_consistent() -> None:
    for uid, entry in ts.TRANSFER_SYNTAXES.items():
        assert entry.uid == uid
        assert entry.name
        if entry.is_compressed:
            assert entry.is_encapsulated
        if not entry.is_encapsulated:
            assert entry.frame_media_type == ts.OCTET_STREAM
            assert not entry.is_lossy
    encapsulated_uncompressed = ts.get("1.2.840.10008.1.2.1.98")
    assert encapsulated_uncompressed is not None
    assert encapsulated_uncompressed.is_encapsulated
    assert not encapsulated_uncompressed.is_compressed


def test_unknown_uid() -> None:
    assert ts.get("1.2.3.4") is None
    assert not ts.can_decode("1.2.3.4")
    with pytest.raises(KeyError, match="unknown transfer syntax"):
        ts.frame_media_type("1.2.3.4")
    with pytest.raises(KeyError):
        ts.is_compressed("1.2.3.4")


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    ],
)
def test_can_decode_with_the_installed_plugins(uid: str) -> None:
    # pylibjpeg (+libjpeg, openjpeg, rle), pyjpegls and Pillow are project dependencies.
    assert ts.can_decode(uid)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.100"])
def test_cannot_decode_without_a_decoder(uid: str) -> None:
    assert not ts.can_decode(uid)
