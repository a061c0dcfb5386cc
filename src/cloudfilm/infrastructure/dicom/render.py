"""Frame access and rendering for WADO-RS Retrieve Frames, /rendered and thumbnails.

None of this runs on the ingest path. Functions never modify the dataset they are given:
the retrieve service shares cached datasets between threads.

References
----------
PS3.5 8.2 and Annex A.4 (native and encapsulated Pixel Data), PS3.3 C.7.6.3 (Image Pixel),
PS3.3 C.11 (Modality LUT, VOI LUT, Presentation LUT), PS3.18 8.3.5.1 (rendering query
parameters: window, viewport, quality), PS3.18 8.7.4 (rendered media types).
"""

from __future__ import annotations

import copy
import io
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import decompress, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from cloudfilm.infrastructure.dicom import transfer_syntax

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "RENDERED_MEDIA_TYPES",
    "RenderError",
    "decode_frame",
    "decoded_frame_bytes",
    "encapsulated_frame",
    "frame_bytes_uncompressed",
    "number_of_frames",
    "render_frame",
    "thumbnail",
    "transcode",
]

MediaType = Literal["image/jpeg", "image/png", "image/gif"]

#: Media types :func:`render_frame` produces (PS3.18 Table 8.7.4-1, single-frame images).
RENDERED_MEDIA_TYPES: frozenset[str] = frozenset({"image/jpeg", "image/png", "image/gif"})
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
_DEFAULT_JPEG_QUALITY = 90
_THUMBNAIL_SIZE = (128, 128)
# Refuse frames above 2**28 samples (e.g. 16384 x 16384): a 2 KB file declaring
# Rows = Columns = 65535 must not make us allocate 8 GB (testdata malformed/oob_rows_cols).
_MAX_FRAME_SAMPLES = 1 << 28
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel, Float Pixel, Double Float Pixel
_UNCOMPRESSED_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_VOI_FUNCTIONS = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})


class RenderError(ValueError):
    """The frame cannot be extracted, decoded or rendered; the message says why."""


class RenderSizeError(RenderError):
    """The requested image size is malformed or larger than :data:`MAX_RENDERED_SIDE`."""


#: Largest side of a rendered image. Without a bound, viewport=40000,40000 took ~15 s and
#: answered 113 MB (the process reached 1.85 GB); 4096 covers a 4K display.
MAX_RENDERED_SIDE = 4096
# Enlargement beyond the source: 2x (a 512 CT fills a 1024 viewport), 4x for small images
# (a 128 x 128 NM or ultrasound region). The viewer scales further itself, at no cost to us.
_MAX_ENLARGEMENT = 2.0
_MAX_ENLARGEMENT_SMALL = 4.0
_SMALL_SIDE = 256


def check_viewport(viewport: tuple[int, int]) -> tuple[int, int]:
    """Validate a requested (width, height) before any pixel is decoded.

    Raises
    ------
    RenderSizeError
        Not two positive integers, or a side above :data:`MAX_RENDERED_SIDE`.
    """
    try:
        width, height = int(viewport[0]), int(viewport[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise RenderSizeError(f"viewport must be (width, height), got {viewport!r}") from exc
    if width <= 0 or height <= 0:
        raise RenderSizeError(f"viewport {width} x {height} must be positive")
    if width > MAX_RENDERED_SIDE or height > MAX_RENDERED_SIDE:
        raise RenderSizeError(f"viewport {width} x {height} is larger than the "
                              f"{MAX_RENDERED_SIDE} x {MAX_RENDERED_SIDE} pixels rendered "
                              "here; ask for a smaller size and let the viewer scale")
    return width, height


# -- header helpers ---------------------------------------------------------------------------


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def number_of_frames(ds: Dataset) -> int:
    """Return (0028,0008) Number of Frames, 1 when absent, empty or invalid."""
    return max(_int(ds, "NumberOfFrames", 1), 1)


def _transfer_syntax_uid(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid).rstrip("\x00 "))
    # No file meta (raw dataset): the encoding it was read with tells native syntaxes apart.
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        raise RenderError("the dataset has no Transfer Syntax UID (0002,0010)")
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _pixel_tag(ds: Dataset) -> int:
    for tag in _PIXEL_TAGS:
        if tag in ds:
            value = ds[tag].value
            if value is None or len(value) == 0:
                raise RenderError("the Pixel Data element is present but empty")
            return tag
    raise RenderError(
        "the object has no Pixel Data (7FE0,0010), Float Pixel Data or Double Float "
        "Pixel Data; it is not an image, or its header was read without pixels"
    )


def _pixel_bytes(ds: Dataset, tag: int) -> bytes:
    value = ds[tag].value
    if not isinstance(value, bytes | bytearray) or not value:
        raise RenderError("the Pixel Data element is empty")
    return bytes(value)


def _check_frame(ds: Dataset, index: int) -> int:
    """Check there are pixels and that frame `index` exists; return the frame count."""
    _pixel_tag(ds)
    frames = number_of_frames(ds)
    if not 0 <= index < frames:
        raise RenderError(
            f"frame index {index} is out of range: the object has {frames} frame(s), indexed from 0"
        )
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples = _int(ds, "SamplesPerPixel", 1)
    if rows <= 0 or columns <= 0:
        raise RenderError("Rows and Columns must be present and positive")
    if rows * columns * samples > _MAX_FRAME_SAMPLES:
        raise RenderError(
            f"a frame of {rows} x {columns} x {samples} samples exceeds the "
            f"{_MAX_FRAME_SAMPLES} samples this server renders"
        )
    return frames


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()


# -- raw frame access -------------------------------------------------------------------------


def frame_bytes_uncompressed(ds: Dataset, index: int) -> bytes:
    """Return the native (uncompressed, little endian) bytes of frame `index`.

    Only frame `index` is sliced out of Pixel Data; nothing is decoded. Big endian
    (retired 1.2.840.10008.1.2.2) words are swapped, as WADO-RS frames are little endian.
    With Bits Allocated 1 and frames that do not end on a byte boundary, the frame's bits
    are re-packed to start at bit 0 of its first byte.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An instance with native (or encapsulated uncompressed) Pixel Data.
    index : int
        0-based frame index.

    Returns
    -------
    bytes
        ``Rows * Columns * SamplesPerPixel * BitsAllocated / 8`` bytes (rounded up for
        1-bit data; ``Rows * Columns * 2`` bytes per 8-bit sample for YBR_FULL_422).

    Raises
    ------
    RenderError
        No pixel data, frame out of range, compressed transfer syntax, Pixel Data shorter
        than the header says.

    References
    ----------
    PS3.5 8.1.1 (bit packing), PS3.3 C.7.6.3.1.2 (YBR_FULL_422), PS3.18 Table 8.7.3-4
    """
    ts_uid = _transfer_syntax_uid(ds)
    entry = transfer_syntax.get(ts_uid)
    frames = _check_frame(ds, index)
    if (entry is not None and entry.is_encapsulated) or (entry is None and _encapsulated(ds)):
        if entry is not None and not entry.is_compressed:
            return encapsulated_frame(ds, index)  # encapsulated uncompressed: native bytes
        raise RenderError(
            f"Pixel Data is compressed ({_ts_name(ts_uid)}); use encapsulated_frame() for "
            "the compressed bitstream or decoded_frame_bytes() for decoded pixels"
        )
    data = _pixel_bytes(ds, _pixel_tag(ds))
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    samples = _int(ds, "SamplesPerPixel", 1)
    bits = _int(ds, "BitsAllocated", 0)
    if bits == 1:
        return _bit_frame(data, index, rows * columns * samples, frames)
    if bits <= 0 or bits % 8:
        raise RenderError(f"Bits Allocated {bits} is not valid for native Pixel Data")
    bytes_per_sample = bits // 8
    if _photometric(ds) == "YBR_FULL_422":
        frame_length = rows * columns * 2 * bytes_per_sample  # 2 Y + Cb + Cr per 2 pixels
    else:
        frame_length = rows * columns * samples * bytes_per_sample
    start = index * frame_length
    if len(data) < start + frame_length:
        raise RenderError(
            f"Pixel Data holds {len(data)} bytes, fewer than the {frames * frame_length} "
            f"that {frames} frame(s) of {rows} x {columns} x {samples} x {bits} bits need"
        )
    frame = data[start : start + frame_length]
    if ts_uid == ExplicitVRBigEndian and bytes_per_sample > 1:
        dtype = np.dtype(f">u{bytes_per_sample}")
        frame = np.frombuffer(frame, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
    return frame


def _bit_frame(data: bytes, index: int, frame_bits: int, frames: int) -> bytes:
    start_bit = index * frame_bits
    if len(data) * 8 < start_bit + frame_bits:
        raise RenderError(
            f"Pixel Data holds {len(data)} bytes, fewer than {frames} 1-bit frame(s) of "
            f"{frame_bits} pixels need"
        )
    if start_bit % 8 == 0 and frame_bits % 8 == 0:
        return data[start_bit // 8 : (start_bit + frame_bits) // 8]
    # Frames are packed back to back across byte boundaries (PS3.5 8.1.1, bit 0 first).
    first = start_bit // 8
    last = (start_bit + frame_bits + 7) // 8
    bits = np.unpackbits(np.frombuffer(data[first:last], dtype=np.uint8), bitorder="little")
    offset = start_bit - first * 8
    return np.packbits(bits[offset : offset + frame_bits], bitorder="little").tobytes()


def _encapsulated(ds: Dataset) -> bool:
    elem = ds.get_item(0x7FE00010, keep_deferred=True)
    if elem is None:
        return False
    length = getattr(elem, "length", None)
    if length is None:
        return bool(getattr(elem, "is_undefined_length", False))
    return bool(length == 0xFFFFFFFF)


def _ts_name(uid: str) -> str:
    entry = transfer_syntax.get(uid)
    return f"{entry.name} ({uid})" if entry is not None else uid


def encapsulated_frame(ds: Dataset, index: int) -> bytes:
    """Return the compressed bitstream of frame `index` of encapsulated Pixel Data.

    Frame boundaries come from the Extended Offset Table (7FE0,0001/0002), else the Basic
    Offset Table, else (both empty) from Number of Frames: one fragment per frame, all
    fragments for a single frame, or JPEG EOI/EOC markers when fragments outnumber frames.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An instance with encapsulated Pixel Data.
    index : int
        0-based frame index.

    Returns
    -------
    bytes
        The fragments of the frame joined, without item headers (PS3.18 8.7.3.3.2).

    Raises
    ------
    RenderError
        No pixel data, native Pixel Data, frame out of range or not found in the fragments.

    References
    ----------
    PS3.5 A.4
    """
    frames = _check_frame(ds, index)
    ts_uid = _transfer_syntax_uid(ds)
    entry = transfer_syntax.get(ts_uid)
    if entry is not None and not entry.is_encapsulated:
        raise RenderError(
            f"Pixel Data is native ({_ts_name(ts_uid)}), not encapsulated; use "
            "frame_bytes_uncompressed()"
        )
    data = _pixel_bytes(ds, 0x7FE00010)
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        return get_frame(data, index, extended_offsets=extended, number_of_frames=frames)
    except (ValueError, EOFError, KeyError) as exc:
        raise RenderError(
            f"cannot find frame {index} in the encapsulated Pixel Data: {exc}"
        ) from exc


# -- decoding ---------------------------------------------------------------------------------


def decode_frame(ds: Dataset, index: int) -> NDArray[Any]:
    """Decode frame `index` to native pixel values.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An image instance, native or compressed in a syntax this host can decode.
    index : int
        0-based frame index.

    Returns
    -------
    numpy.ndarray
        ``(Rows, Columns)`` for one sample per pixel (palette colour: the indices), or
        ``(Rows, Columns, 3)`` RGB for colour (YBR photometric interpretations converted).
        Stored values: no Modality or VOI LUT applied.

    Raises
    ------
    RenderError
        No pixel data, frame out of range, transfer syntax not decodable here, or the
        decoder failed (corrupt or truncated data).
    """
    _check_frame(ds, index)
    ts_uid = _transfer_syntax_uid(ds)
    if ts_uid == "1.2.840.10008.1.2.1.98":
        return _decode_encapsulated_uncompressed(ds, index)
    entry = transfer_syntax.get(ts_uid)
    if _int(ds, "BitsAllocated", 0) == 1 and entry is not None and not entry.is_encapsulated:
        # pydicom 3.0.2 mis-sizes frames of bit-packed data that do not start on a byte
        # boundary (e.g. frame 3 of 5 x 7 pixels); unpack our own frame slice instead.
        rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
        samples = _int(ds, "SamplesPerPixel", 1)
        frame = np.frombuffer(frame_bytes_uncompressed(ds, index), dtype=np.uint8)
        bits = np.unpackbits(frame, bitorder="little")[: rows * columns * samples]
        shape = (rows, columns) if samples == 1 else (rows, columns, samples)
        return bits.reshape(shape)
    if not transfer_syntax.can_decode(ts_uid):
        raise RenderError(
            f"pixel data in {_ts_name(ts_uid)} cannot be decoded on this server; "
            "ask for the frames as stored (transfer-syntax=*)"
        )
    source = ds
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # A raw dataset (no Part 10 header, ACR-NEMA style): pydicom's decoders need the
        # syntax in file_meta. Give it to a shallow copy; the cached dataset stays as is.
        source = copy.copy(ds)
        source.file_meta = FileMetaDataset()
        source.file_meta.TransferSyntaxUID = ts_uid
    try:
        arr: NDArray[Any] = pixel_array(source, index=index, as_rgb=True)
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise RenderError(f"cannot decode frame {index} ({_ts_name(ts_uid)}): {exc}") from exc
    return arr


def _decode_encapsulated_uncompressed(ds: Dataset, index: int) -> NDArray[Any]:
    # Each fragment holds one native frame (PS3.5 A.4.11); decode it as Explicit VR LE.
    single = Dataset()
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "PlanarConfiguration",
    ):
        if keyword in ds:
            single[keyword] = copy.copy(ds[keyword])
    single.NumberOfFrames = 1
    single.PixelData = encapsulated_frame(ds, index)
    single.file_meta = FileMetaDataset()
    single.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        arr: NDArray[Any] = pixel_array(single, as_rgb=True)
    except Exception as exc:
        raise RenderError(f"cannot read encapsulated uncompressed frame {index}: {exc}") from exc
    return arr


def decoded_frame_bytes(ds: Dataset, index: int) -> bytes:
    """Return frame `index` decoded to native little endian bytes (for WADO-RS frames).

    Colour frames are RGB, interleaved (Planar Configuration 0); 1-bit frames are packed.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An image instance.
    index : int
        0-based frame index.

    Returns
    -------
    bytes

    Raises
    ------
    RenderError
        As :func:`decode_frame`.
    """
    arr = decode_frame(ds, index)
    if _int(ds, "BitsAllocated", 8) == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


# -- rendering --------------------------------------------------------------------------------


def _functional_group_value(ds: Dataset, index: int, sequence: str, keyword: str) -> Any:
    """Return `keyword` from the per-frame, then shared functional groups, then top level."""
    for groups_keyword, item in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if groups and len(groups) > item:
            macro = groups[item].get(sequence)
            if macro and keyword in macro[0]:
                return macro[0][keyword]
    return ds.get(keyword)


def _first_number(value: Any) -> float | None:
    """Return the first value of a (possibly multi-valued) DS/IS as a finite float."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _modality_values(arr: NDArray[Any], ds: Dataset, index: int) -> NDArray[Any]:
    """Apply the Modality LUT stage (PS3.3 C.11.1): slope/intercept or a LUT."""
    if "ModalityLUTSequence" in ds:
        result: NDArray[Any] = apply_modality_lut(arr, ds).astype(np.float64, copy=False)
        return result
    slope = _first_number(
        _functional_group_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    )
    intercept = _first_number(
        _functional_group_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    )
    values = arr.astype(np.float64)
    if slope is not None and slope != 1.0:
        values *= slope
    if intercept:
        values += intercept
    return values


def _normalise_window(window: tuple[float, float, str]) -> tuple[float, float, str]:
    try:
        center, width = float(window[0]), float(window[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise RenderError(f"window must be (center, width, function), got {window!r}") from exc
    function = (str(window[2]) if len(window) > 2 and window[2] else "LINEAR").upper()
    function = function.replace("-", "_")
    if function not in _VOI_FUNCTIONS:
        raise RenderError(
            f"window function {window[2]!r} is not one of linear, linear-exact, sigmoid"
        )
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RenderError("window center and width must be finite numbers")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise RenderError(
            f"window width {width:g} is not valid: it must be >= 1 for LINEAR and > 0 "
            "for LINEAR_EXACT and SIGMOID (PS3.3 C.11.2.1.2)"
        )
    return center, width, function


def _header_window(ds: Dataset, index: int) -> tuple[float, float, str] | None:
    center = _first_number(
        _functional_group_value(ds, index, "FrameVOILUTSequence", "WindowCenter")
    )
    width = _first_number(_functional_group_value(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = _functional_group_value(ds, index, "FrameVOILUTSequence", "VOILUTFunction")
    try:
        return _normalise_window((center, max(width, 1.0), str(function or "LINEAR")))
    except RenderError:
        return _normalise_window((center, max(width, 1.0), "LINEAR"))


def _apply_window(
    values: NDArray[Any], center: float, width: float, function: str
) -> NDArray[np.uint8]:
    """Map modality values to 0-255 (PS3.3 C.11.2.1.2, equations for each function)."""
    if function == "SIGMOID":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        scaled = (values - center) / width + 0.5
    elif width <= 1:
        scaled = (values > center - 0.5).astype(np.float64)
    else:
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    out: NDArray[np.uint8] = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _to_8bit_range(values: NDArray[Any], low: float, high: float) -> NDArray[np.uint8]:
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    out: NDArray[np.uint8] = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    return out


def _grayscale_8bit(
    arr: NDArray[Any], ds: Dataset, index: int, window: tuple[float, float, str] | None
) -> NDArray[np.uint8]:
    values = _modality_values(arr, ds, index)
    chosen = _normalise_window(window) if window is not None else _header_window(ds, index)
    if chosen is not None:
        out = _apply_window(values, *chosen)
    elif "VOILUTSequence" in ds:
        lut_out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        descriptor = ds.VOILUTSequence[0].get("LUTDescriptor") or [0, 0, 16]
        out = _to_8bit_range(lut_out, 0.0, float(2 ** int(descriptor[2]) - 1))
    else:
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size == 0:
            out = np.zeros(values.shape, dtype=np.uint8)
        else:
            out = _to_8bit_range(values, float(finite.min()), float(finite.max()))
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip() == "INVERSE"
    if _photometric(ds) == "MONOCHROME1" or inverse:
        out = 255 - out
    return out


def _colour_8bit(arr: NDArray[Any], ds: Dataset) -> NDArray[np.uint8]:
    if _photometric(ds) == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as exc:
            raise RenderError(f"cannot apply the palette colour lookup table: {exc}") from exc
        if rgb.dtype == np.uint8:
            return rgb
        return (rgb >> 8).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
    if arr.dtype == np.uint8:
        return arr
    bits_stored = _int(ds, "BitsStored", arr.dtype.itemsize * 8)
    shift = max(bits_stored - 8, 0)
    out: NDArray[np.uint8] = np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
    return out


def _render_image(ds: Dataset, index: int, window: tuple[float, float, str] | None) -> Image.Image:
    arr = decode_frame(ds, index)
    if arr.ndim == 3 or _photometric(ds) == "PALETTE COLOR":
        rgb = _colour_8bit(arr, ds)
        if rgb.ndim == 3 and rgb.shape[-1] == 4:  # palette with alpha: drop it
            rgb = rgb[..., :3]
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return Image.fromarray(_grayscale_8bit(arr, ds, index, window), mode="L")


def _fit(image: Image.Image, viewport: tuple[int, int], upscale: bool) -> Image.Image:
    max_width, max_height = check_viewport(viewport)
    width, height = image.size
    scale = min(max_width / width, max_height / height)
    if scale >= 1 and not upscale:
        return image
    # Enlarge at most a small factor: the result still fits the viewport, and the work
    # stays bounded by the source, not by the request.
    limit = _MAX_ENLARGEMENT_SMALL if max(width, height) <= _SMALL_SIDE else _MAX_ENLARGEMENT
    scale = min(scale, limit)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    if scale < 1:
        # reducing_gap: a fast box reduction first, then Lanczos; indistinguishable at
        # thumbnail sizes and ~4x faster for a 2140 x 1760 CR.
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image.resize(size, Image.Resampling.BICUBIC)


def _encode(image: Image.Image, media_type: str, quality: int | None) -> bytes:
    fmt = _PIL_FORMATS.get(media_type)
    if fmt is None:
        raise RenderError(
            f"rendered media type {media_type!r} is not supported; use one of "
            f"{', '.join(sorted(RENDERED_MEDIA_TYPES))}"
        )
    if quality is not None and not (isinstance(quality, int) and 1 <= quality <= 100):
        raise RenderError(f"quality {quality!r} must be an integer from 1 to 100")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality or _DEFAULT_JPEG_QUALITY)
    elif fmt == "PNG":
        image.save(buffer, "PNG", compress_level=6)
    else:
        if image.mode == "RGB":
            image = image.quantize(colors=256)
        image.save(buffer, "GIF")
    return buffer.getvalue()


def render_frame(
    ds: Dataset,
    index: int,
    *,
    media_type: MediaType | str = "image/jpeg",
    window: tuple[float, float, str] | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int | None = None,
) -> bytes:
    """Render frame `index` as a consumer image (WADO-RS /rendered).

    Grayscale: Modality LUT (Rescale Slope/Intercept, per-frame functional groups first),
    then the `window` given, else the first Window Center/Width of the header (per-frame
    Frame VOI LUT first), else the VOI LUT Sequence, else the frame's min/max; MONOCHROME1
    is inverted. Colour passes through as RGB; palette colour goes through its LUT.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An image instance.
    index : int
        0-based frame index.
    media_type : {"image/jpeg", "image/png", "image/gif"}
        Output format.
    window : (center, width, function), optional
        PS3.18 ``window`` parameter; function ``linear``, ``linear-exact`` or ``sigmoid``.
    viewport : (width, height), optional
        Scale to fit inside, keeping the aspect ratio; at most :data:`MAX_RENDERED_SIDE` a
        side, enlarging at most 2x (4x for sources of 256 pixels or less). Without it,
        a source larger than :data:`MAX_RENDERED_SIDE` is reduced to fit.
    quality : int, optional
        JPEG quality 1-100 (default 90); ignored for PNG and GIF.

    Returns
    -------
    bytes
        The encoded image.

    Raises
    ------
    RenderSizeError
        The viewport is malformed or above :data:`MAX_RENDERED_SIDE` (before decoding).
    RenderError
        No pixel data, frame out of range, transfer syntax not decodable here, decoder
        failure, or an invalid parameter.

    References
    ----------
    PS3.18 8.3.5.1, PS3.3 C.11.1, C.11.2, C.11.6
    """
    if media_type not in RENDERED_MEDIA_TYPES:
        _encode(Image.new("L", (1, 1)), media_type, quality)  # raises the RenderError
    if viewport is not None:
        check_viewport(viewport)  # before decoding anything
    image = _render_image(ds, index, window)
    if viewport is not None:
        image = _fit(image, viewport, upscale=True)
    elif max(image.size) > MAX_RENDERED_SIDE:
        image = _fit(image, (MAX_RENDERED_SIDE, MAX_RENDERED_SIDE), upscale=False)
    return _encode(image, media_type, quality)


def thumbnail(
    ds: Dataset,
    index: int = 0,
    *,
    media_type: MediaType | str = "image/jpeg",
    size: tuple[int, int] = _THUMBNAIL_SIZE,
    quality: int | None = None,
) -> bytes:
    """Render a thumbnail: :func:`render_frame` fitted into `size` (never enlarged).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An image instance.
    index : int, optional
        0-based frame index (default the first frame).
    media_type : {"image/jpeg", "image/png", "image/gif"}
        Output format.
    size : (width, height), optional
        The box to fit into, default 128 x 128.
    quality : int, optional
        JPEG quality 1-100.

    Returns
    -------
    bytes

    Raises
    ------
    RenderError
        As :func:`render_frame`.
    """
    image = _fit(_render_image(ds, index, None), size, upscale=False)
    return _encode(image, media_type, quality)


# -- transcoding ------------------------------------------------------------------------------


def transcode(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Return `ds` as Part 10 bytes in an uncompressed little endian transfer syntax.

    Compressed Pixel Data is decoded (YBR colour converted to RGB, Photometric
    Interpretation and Planar Configuration updated; SOP Instance UID kept, as the
    pixels are unchanged by lossless decoding and lossy ones were lossy already).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance, read in full; it is not modified (a copy is transcoded).
    transfer_syntax_uid : str
        Explicit VR Little Endian or Implicit VR Little Endian.

    Returns
    -------
    bytes
        A DICOM Part 10 file.

    Raises
    ------
    RenderError
        Target not an uncompressed little endian syntax, or source not decodable here.
    """
    target = UID(transfer_syntax_uid)
    if target not in _UNCOMPRESSED_TARGETS:
        raise RenderError(
            f"can only transcode to {ExplicitVRLittleEndian} or {ImplicitVRLittleEndian}, "
            f"not {transfer_syntax_uid}"
        )
    source = _transfer_syntax_uid(ds)
    out = copy.deepcopy(ds)  # values are immutable bytes/str: this copies the element tree
    has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
    if has_pixels and (source.is_compressed or source == ExplicitVRBigEndian):
        if not transfer_syntax.can_decode(source):
            raise RenderError(f"pixel data in {_ts_name(source)} cannot be decoded here")
        try:
            if source.is_compressed:
                decompress(out, as_rgb=True, generate_instance_uid=False)
            else:
                # pydicom re-encodes the other elements but writes OB/OW bytes as they are:
                # swap the pixel words ourselves.
                out[0x7FE00010] = _little_endian_pixel_data(ds)
        except RenderError:
            raise
        except Exception as exc:
            raise RenderError(f"cannot decode the pixel data: {exc}") from exc
    if not hasattr(out, "file_meta") or out.file_meta is None:
        out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = target
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, out, enforce_file_format=True)
    except Exception as exc:
        raise RenderError(f"cannot write the transcoded object: {exc}") from exc
    return buffer.getvalue()


def _little_endian_pixel_data(ds: Dataset) -> DataElement:
    bits = _int(ds, "BitsAllocated", 16)
    arr = pixel_array(ds, as_rgb=False)
    if bits == 1:
        data = np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    else:
        data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()
    if len(data) % 2:
        data += b"\x00"
    return DataElement(0x7FE00010, "OW" if bits > 8 else "OB", data)
