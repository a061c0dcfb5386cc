"""Transfer syntaxes the archive stores and serves, with their WADO-RS frame media types.

References
----------
PS3.5 Annex A (transfer syntaxes), PS3.6 Table A-1 (UIDs), PS3.18 8.7.3.3 (Table 8.7.3-4
uncompressed and Table 8.7.3-5 compressed Bulkdata media types).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

__all__ = [
    "OCTET_STREAM",
    "TRANSFER_SYNTAXES",
    "TransferSyntax",
    "can_decode",
    "frame_media_type",
    "get",
    "is_compressed",
    "is_encapsulated",
    "is_lossy",
]

logger = logging.getLogger(__name__)

#: Media type of uncompressed frames (PS3.18 Table 8.7.3-4).
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """One transfer syntax and how its frames are served.

    Attributes
    ----------
    uid : str
        The Transfer Syntax UID.
    name : str
        The name from PS3.6 Table A-1.
    is_encapsulated : bool
        Pixel Data is encapsulated in fragments (PS3.5 A.4).
    is_compressed : bool
        Pixel Data is compressed (encapsulated uncompressed is encapsulated, not compressed).
    is_lossy : bool
        The syntax allows or implies lossy compression; frames may not equal the original.
    frame_media_type : str
        Media type of one frame in WADO-RS Retrieve Frames (PS3.18 Tables 8.7.3-4/5).
    is_video : bool
        A video syntax: the whole Pixel Data is one stream, not separable frames.
    """

    uid: str
    name: str
    is_encapsulated: bool
    is_compressed: bool
    is_lossy: bool
    frame_media_type: str
    is_video: bool = False


def _native(uid: str, name: str) -> TransferSyntax:
    return TransferSyntax(uid, name, False, False, False, OCTET_STREAM)


def _compressed(uid: str, name: str, lossy: bool, media_type: str) -> TransferSyntax:
    return TransferSyntax(uid, name, True, True, lossy, media_type)


def _video(uid: str, name: str, media_type: str) -> TransferSyntax:
    return TransferSyntax(uid, name, True, True, True, media_type, is_video=True)


# PS3.18 Table 8.7.3-5 lists image/jpeg for all four JPEG process syntaxes, .4.70 being the
# default. "image/jll" for .4.57/.4.70 is a dcm4chee/Cornerstone convention, not in the
# standard; we answer the standard type and leave aliases to the WADO door.
# .4.91, .4.93 and .4.203 allow lossless or lossy coding; we mark them lossy because nothing
# in the header proves otherwise (Lossy Image Compression (0028,2110) may say more).
_TABLE: tuple[TransferSyntax, ...] = (
    _native("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    _native("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    _native("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"),
    _native("1.2.840.10008.1.2.2", "Explicit VR Big Endian (Retired)"),
    TransferSyntax(
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
        True,
        False,
        False,
        OCTET_STREAM,
    ),
    _compressed("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", True, "image/jpeg"),
    _compressed("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", True, "image/jpeg"),
    _compressed(
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
        False,
        "image/jpeg",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        False,
        "image/jpeg",
    ),
    _compressed("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression", False, "image/jls"),
    _compressed(
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
        True,
        "image/jls",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
        False,
        "image/jp2",
    ),
    _compressed("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression", True, "image/jp2"),
    _compressed(
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
        False,
        "image/jpx",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.93",
        "JPEG 2000 Part 2 Multi-component Image Compression",
        True,
        "image/jpx",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
        False,
        "image/jphc",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
        False,
        "image/jphc",
    ),
    _compressed(
        "1.2.840.10008.1.2.4.203",
        "High-Throughput JPEG 2000 Image Compression",
        True,
        "image/jphc",
    ),
    _compressed("1.2.840.10008.1.2.5", "RLE Lossless", False, "image/dicom-rle"),
    _video("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level", "video/mpeg"),
    _video("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level", "video/mpeg"),
    _video("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1", "video/mp4"),
    _video(
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        "video/mp4",
    ),
    _video(
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        "video/mp4",
    ),
    _video(
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        "video/mp4",
    ),
    _video(
        "1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", "video/mp4"
    ),
    _video("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1", "video/mp4"),
    _video("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1", "video/mp4"),
)

#: Every supported transfer syntax by UID (read-only).
TRANSFER_SYNTAXES: Mapping[str, TransferSyntax] = MappingProxyType({t.uid: t for t in _TABLE})


def get(uid: str) -> TransferSyntax | None:
    """Return the table entry for `uid`, or ``None`` if the archive does not know it.

    Parameters
    ----------
    uid : str
        A Transfer Syntax UID; trailing NUL or space padding is ignored.

    Returns
    -------
    TransferSyntax or None
    """
    return TRANSFER_SYNTAXES.get(uid.rstrip("\x00 "))


def _require(uid: str) -> TransferSyntax:
    entry = get(uid)
    if entry is None:
        raise KeyError(f"unknown transfer syntax {uid!r}; known: see TRANSFER_SYNTAXES")
    return entry


def is_compressed(uid: str) -> bool:
    """Return whether Pixel Data in `uid` is compressed. Raises KeyError if unknown."""
    return _require(uid).is_compressed


def is_encapsulated(uid: str) -> bool:
    """Return whether Pixel Data in `uid` is encapsulated. Raises KeyError if unknown."""
    return _require(uid).is_encapsulated


def is_lossy(uid: str) -> bool:
    """Return whether `uid` may be lossy. Raises KeyError if unknown."""
    return _require(uid).is_lossy


def frame_media_type(uid: str) -> str:
    """Return the WADO-RS media type of one frame stored in `uid`.

    Parameters
    ----------
    uid : str
        A Transfer Syntax UID from :data:`TRANSFER_SYNTAXES`.

    Returns
    -------
    str
        E.g. ``"image/jpeg"``, ``"image/jls"``, ``"application/octet-stream"``.

    Raises
    ------
    KeyError
        If `uid` is unknown.

    References
    ----------
    PS3.18 Tables 8.7.3-4 and 8.7.3-5
    """
    return _require(uid).frame_media_type


@lru_cache(maxsize=1)
def _decodable() -> frozenset[str]:
    """Probe pydicom's pixel data decoders once for every known syntax."""
    from pydicom.pixels.decoders.base import get_decoder

    found: set[str] = set()
    for uid in TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                found.add(uid)
        except (NotImplementedError, ValueError, ImportError):
            continue
    logger.debug(
        "cloudfilm.dicom.decoders_probed",
        extra={"decodable": sorted(found), "known": len(TRANSFER_SYNTAXES)},
    )
    return frozenset(found)


def can_decode(uid: str) -> bool:
    """Return whether pydicom, with the plugins installed here, can decode `uid`.

    The decoders are probed once per process (first call); unknown UIDs return ``False``.

    Parameters
    ----------
    uid : str
        A Transfer Syntax UID.

    Returns
    -------
    bool
    """
    return uid.rstrip("\x00 ") in _decodable()
