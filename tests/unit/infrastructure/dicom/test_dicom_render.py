"""Frame extraction, decoding, rendering and transcoding (PS3.5 A.4, PS3.3 C.11, PS3.18 8.3.5)."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from cloudfilm.infrastructure.dicom import render
from cloudfilm.infrastructure.dicom.render import RenderError

SHARED = Path(__file__).resolve().parents[5] / "shared" / "testdata" / "dicom"


def load(name: str, **kwargs: object) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not available (pydicom-data not installed)")
    return pydicom.dcmread(path, **kwargs)  # type: ignore[arg-type]


def shared(relative: str) -> Dataset:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip("shared test data folder not present")
    return pydicom.dcmread(path, force=True)


def image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(image(data))


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("media_type", "fmt"), [("image/jpeg", "JPEG"), ("image/png", "PNG")])
def test_render_ct_small(media_type: str, fmt: str) -> None:
    out = render.render_frame(load("CT_small.dcm"), 0, media_type=media_type)
    img = image(out)
    assert (img.format, img.size, img.mode) == (fmt, (128, 128), "L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # an image, not a constant


def test_render_gif() -> None:
    img = image(render.render_frame(load("CT_small.dcm"), 0, media_type="image/gif"))
    assert (img.format, img.size) == ("GIF", (128, 128))
    rgb = image(render.render_frame(load("SC_rgb_rle.dcm"), 0, media_type="image/gif"))
    assert rgb.format == "GIF"


def test_min_max_is_used_without_a_window() -> None:
    ds = load("CT_small.dcm")
    assert "WindowCenter" not in ds
    out = pixels(render.render_frame(ds, 0, media_type="image/png"))
    assert (out.min(), out.max()) == (0, 255)
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    assert np.array_equal(out, expected.astype(np.uint8))


@pytest.mark.parametrize(
    ("viewport", "size"),
    [
        ((64, 32), (32, 32)),
        ((64, 64), (64, 64)),
        ((256, 100), (100, 100)),
        ((300, 400), (300, 300)),
    ],
)
def test_viewport_keeps_the_aspect_ratio(viewport: tuple[int, int], size: tuple[int, int]) -> None:
    out = render.render_frame(load("CT_small.dcm"), 0, viewport=viewport)
    assert image(out).size == size


def test_viewport_on_a_non_square_image() -> None:
    ds = load("JPEG2000.dcm")  # 256 columns x 1024 rows
    assert image(render.render_frame(ds, 0, viewport=(128, 128))).size == (32, 128)


def test_window_parameter_changes_the_output() -> None:
    ds = load("CT_small.dcm")
    default = pixels(render.render_frame(ds, 0, media_type="image/png"))
    soft = pixels(render.render_frame(ds, 0, media_type="image/png", window=(40, 400, "linear")))
    bone = pixels(render.render_frame(ds, 0, media_type="image/png", window=(500, 2000, "linear")))
    assert not np.array_equal(default, soft)
    assert not np.array_equal(soft, bone)
    sigmoid = render.render_frame(ds, 0, media_type="image/png", window=(40, 400, "sigmoid"))
    exact = render.render_frame(ds, 0, media_type="image/png", window=(40, 400, "linear-exact"))
    assert not np.array_equal(pixels(sigmoid), soft)
    assert pixels(exact).shape == soft.shape


def _synthetic_ct(values: list[list[int]], **header: object) -> Dataset:
    """A 16-bit signed CT-like image with Rescale Slope 1, Intercept -1024."""
    arr = np.asarray(values, dtype=np.int16)
    ds = Dataset()
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.PixelData = arr.astype("<i2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_modality_lut_and_linear_window_follow_ps33_c11() -> None:
    # Stored values; HU = stored - 1024. Window 40/400 LINEAR maps HU <= -160.5 to 0 and
    # HU > 239.5 to 255, and in between ((HU - 39.5) / 399 + 0.5) * 255 (PS3.3 C.11.2.1.2.1).
    hu = np.array([[-1000, -161, -160], [40, 239, 240]])
    ds = _synthetic_ct((hu + 1024).tolist())
    out = pixels(render.render_frame(ds, 0, media_type="image/png", window=(40, 400, "LINEAR")))
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255)
    assert np.array_equal(out, np.rint(expected).astype(np.uint8))
    assert out[0, 0] == 0 and out[1, 2] == 255


def test_header_window_is_used_when_no_window_is_given() -> None:
    hu = [[-1000, 0, 40], [100, 200, 1000]]
    stored = (np.array(hu) + 1024).tolist()
    plain = render.render_frame(_synthetic_ct(stored), 0, media_type="image/png")
    with_header = _synthetic_ct(stored, WindowCenter=[40, 500], WindowWidth=[400, 2000])
    windowed = render.render_frame(with_header, 0, media_type="image/png")
    explicit = render.render_frame(
        with_header, 0, media_type="image/png", window=(40, 400, "linear")
    )
    assert pixels(windowed).tolist() == pixels(explicit).tolist()  # the first value pair
    assert pixels(windowed).tolist() != pixels(plain).tolist()


def test_monochrome1_is_inverted() -> None:
    ds = load("CT_small.dcm")
    mono2 = pixels(render.render_frame(ds, 0, media_type="image/png"))
    inverted = copy.deepcopy(ds)
    inverted.PhotometricInterpretation = "MONOCHROME1"
    mono1 = pixels(render.render_frame(inverted, 0, media_type="image/png"))
    assert np.array_equal(mono1, 255 - mono2)


@pytest.mark.parametrize("name", ["SC_rgb_small_odd.dcm", "SC_rgb_rle.dcm", "SC_rgb.dcm"])
def test_rgb_passes_through(name: str) -> None:
    ds = load(name)
    out = pixels(render.render_frame(ds, 0, media_type="image/png"))
    assert out.shape == (ds.Rows, ds.Columns, 3)
    assert np.array_equal(out, pixel_array(ds, index=0))


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_ybr_is_converted_to_rgb(name: str) -> None:
    ds = load(name)
    out = pixels(render.render_frame(ds, 0, media_type="image/png"))
    assert out.shape == (100, 100, 3)
    # SC_rgb test pattern: the top rows are pure red (within lossy JPEG error).
    red = out[2, 50].astype(int)
    assert red[0] > 200 and red[1] < 40 and red[2] < 40


def test_palette_colour_goes_through_its_lut() -> None:
    ds = load("examples_palette.dcm")
    out = pixels(render.render_frame(ds, 0, media_type="image/png"))
    assert out.shape == (ds.Rows, ds.Columns, 3)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 10


def test_thumbnail_fits_and_never_enlarges() -> None:
    assert image(render.thumbnail(load("CT_small.dcm"))).size == (128, 128)
    assert image(render.thumbnail(load("MR_small.dcm"))).size == (64, 64)
    assert image(render.thumbnail(load("JPEG2000.dcm"))).size == (32, 128)
    png = render.thumbnail(load("CT_small.dcm"), media_type="image/png", size=(50, 50))
    assert image(png).format == "PNG" and image(png).size == (50, 50)


def test_quality_changes_jpeg_size() -> None:
    ds = load("CT_small.dcm")
    assert len(render.render_frame(ds, 0, quality=10)) < len(render.render_frame(ds, 0))


def test_rendering_does_not_change_the_dataset() -> None:
    ds = load("MR_small_RLE.dcm")
    pixel_data = ds.PixelData
    render.render_frame(ds, 0, viewport=(32, 32))
    render.transcode(ds, ExplicitVRLittleEndian)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert ds.PixelData is pixel_data
    assert "_pixel_array" not in ds.__dict__ or ds.__dict__["_pixel_array"] is None


# -- compressed and uncompressed twins decode to the same pixels ---------------------------------


@pytest.mark.parametrize(
    "compressed",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"],
)
def test_lossless_twins_decode_identically(compressed: str) -> None:
    reference = render.decode_frame(load("MR_small.dcm"), 0)
    assert np.array_equal(render.decode_frame(load(compressed), 0), reference)


def test_big_endian_twin_decodes_identically() -> None:
    reference = load("MR_small.dcm")
    big = load("MR_small_bigendian.dcm")
    assert np.array_equal(render.decode_frame(big, 0), render.decode_frame(reference, 0))
    assert render.frame_bytes_uncompressed(big, 0) == render.frame_bytes_uncompressed(reference, 0)


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [
        ("rtdose_rle.dcm", "rtdose.dcm"),
        ("SC_rgb_rle_2frame.dcm", "SC_rgb_2frame.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),
        ("US1_J2KR.dcm", "US1_UNCR.dcm"),
    ],
)
def test_multiframe_twins_decode_identically(compressed: str, uncompressed: str) -> None:
    comp, unc = load(compressed), load(uncompressed)
    frames = render.number_of_frames(unc)
    assert render.number_of_frames(comp) == frames
    for index in range(frames):
        decoded = render.decode_frame(comp, index)
        assert np.array_equal(decoded, render.decode_frame(unc, index)), index
        if unc.PhotometricInterpretation == comp.PhotometricInterpretation:
            assert render.decoded_frame_bytes(comp, index) == render.frame_bytes_uncompressed(
                unc, index
            )


# -- frame extraction ---------------------------------------------------------------------------


def test_uncompressed_frames_are_sliced_without_decoding_everything() -> None:
    ds = load("rtdose.dcm")  # 15 frames of 10 x 10 x 32 bits
    assert render.number_of_frames(ds) == 15
    frames = [render.frame_bytes_uncompressed(ds, i) for i in range(15)]
    assert all(len(f) == 400 for f in frames)
    assert b"".join(frames) == ds.PixelData
    for i in (0, 7, 14):
        assert frames[i] == pixel_array(ds, index=i).astype("<u4").tobytes()


def test_rgb_multiframe_slices() -> None:
    ds = load("SC_rgb_2frame.dcm")
    second = render.frame_bytes_uncompressed(ds, 1)
    assert second == pixel_array(ds, index=1).tobytes()


def _one_bit(rows: int, columns: int, frames: int) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=(frames, rows, columns), dtype=np.uint8)
    ds = Dataset()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
    ds.PixelData = packed + b"\x00" * (len(packed) % 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, bits


@pytest.mark.parametrize(("rows", "columns"), [(3, 3), (5, 7), (4, 4)])
def test_one_bit_frames_are_repacked_from_bit_offsets(rows: int, columns: int) -> None:
    ds, bits = _one_bit(rows, columns, 3)
    for index in range(3):
        frame = render.frame_bytes_uncompressed(ds, index)
        expected = np.packbits(bits[index].ravel(), bitorder="little").tobytes()
        assert frame == expected
        assert np.array_equal(render.decode_frame(ds, index), bits[index])


def test_one_bit_segmentation_frames() -> None:
    ds = load("liver.dcm")  # SEG, 1 bit, 3 frames of 512 x 512
    frame = render.frame_bytes_uncompressed(ds, 2)
    assert len(frame) == 512 * 512 // 8
    unpacked = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")
    assert np.array_equal(unpacked.reshape(512, 512), pixel_array(ds, index=2))


def test_encapsulated_frames_match_pydicom() -> None:
    ds = load("rtdose_rle.dcm")
    expected = list(generate_frames(ds.PixelData, number_of_frames=15))
    assert [render.encapsulated_frame(ds, i) for i in range(15)] == expected


def _reencapsulated(
    source: str, frames: int, fragments: int, *, bot: bool, extended: bool = False
) -> tuple[Dataset, bytes]:
    ds = load(source)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    copy_ds = copy.deepcopy(ds)
    if extended:
        data, offsets, lengths = encapsulate_extended([frame] * frames)
        copy_ds.ExtendedOffsetTable = offsets
        copy_ds.ExtendedOffsetTableLengths = lengths
    else:
        data = encapsulate([frame] * frames, fragments_per_frame=fragments, has_bot=bot)
    copy_ds.PixelData = data
    copy_ds.NumberOfFrames = frames
    return copy_ds, frame


def test_single_frame_in_several_fragments_without_offset_table() -> None:
    ds, frame = _reencapsulated("MR_small_RLE.dcm", 1, 3, bot=False)
    assert render.encapsulated_frame(ds, 0) == frame
    reference = render.decode_frame(load("MR_small.dcm"), 0)
    assert np.array_equal(render.decode_frame(ds, 0), reference)


@pytest.mark.parametrize("bot", [True, False])
def test_multiframe_with_two_fragments_per_frame(bot: bool) -> None:
    # Without a Basic Offset Table the frame ends are found from the J2K EOC markers.
    ds, frame = _reencapsulated("MR_small_jp2klossless.dcm", 3, 2, bot=bot)
    for index in range(3):
        assert render.encapsulated_frame(ds, index) == frame
    reference = render.decode_frame(load("MR_small.dcm"), 0)
    assert np.array_equal(render.decode_frame(ds, 2), reference)


def test_extended_offset_table() -> None:
    ds, frame = _reencapsulated("MR_small_jp2klossless.dcm", 4, 1, bot=False, extended=True)
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert [render.encapsulated_frame(ds, i) for i in range(4)] == [frame] * 4


def test_encapsulated_uncompressed_frames() -> None:
    # 1.2.840.10008.1.2.1.98: one native frame per fragment (PS3.5 A.4.11).
    ds = load("rtdose.dcm")
    frames = [render.frame_bytes_uncompressed(ds, i) for i in range(15)]
    encapsulated = copy.deepcopy(ds)
    encapsulated.PixelData = encapsulate(frames, has_bot=True)
    encapsulated["PixelData"].is_undefined_length = True
    encapsulated.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.98"
    assert render.frame_bytes_uncompressed(encapsulated, 3) == frames[3]
    assert render.encapsulated_frame(encapsulated, 14) == frames[14]
    assert np.array_equal(render.decode_frame(encapsulated, 3), render.decode_frame(ds, 3))


# -- transcoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("MR_small_RLE.dcm", ExplicitVRLittleEndian),
        ("MR_small_jp2klossless.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRLittleEndian),
    ],
)
def test_transcode_to_uncompressed(name: str, target: str) -> None:
    out = pydicom.dcmread(io.BytesIO(render.transcode(load(name), target)))
    assert out.file_meta.TransferSyntaxUID == target
    reference = load("MR_small.dcm")
    assert out.SOPInstanceUID == reference.SOPInstanceUID
    assert np.array_equal(out.pixel_array, reference.pixel_array)


def test_transcode_ybr_jpeg_to_rgb() -> None:
    out = pydicom.dcmread(
        io.BytesIO(render.transcode(load("SC_rgb_jpeg_dcmtk.dcm"), ExplicitVRLittleEndian))
    )
    assert out.PhotometricInterpretation == "RGB"
    assert out.pixel_array.shape == (100, 100, 3)


def test_transcode_refuses_compressed_targets() -> None:
    with pytest.raises(RenderError, match="can only transcode"):
        render.transcode(load("MR_small.dcm"), RLELossless)


# -- errors -------------------------------------------------------------------------------------


def test_render_error_is_a_value_error() -> None:
    assert issubclass(RenderError, ValueError)


@pytest.mark.parametrize(
    "call",
    [
        lambda ds: render.render_frame(ds, 0),
        lambda ds: render.decode_frame(ds, 0),
        lambda ds: render.frame_bytes_uncompressed(ds, 0),
        lambda ds: render.encapsulated_frame(ds, 0),
        lambda ds: render.thumbnail(ds),
    ],
)
def test_no_pixel_data(call: object) -> None:
    ds = load("CT_small.dcm", stop_before_pixels=True)
    with pytest.raises(RenderError, match="no Pixel Data"):
        call(ds)  # type: ignore[operator]


@pytest.mark.parametrize(("name", "index"), [("CT_small.dcm", 1), ("rtdose.dcm", 15)])
def test_frame_index_out_of_range(name: str, index: int) -> None:
    ds = load(name)
    for call in (render.render_frame, render.decode_frame, render.frame_bytes_uncompressed):
        with pytest.raises(RenderError, match="out of range"):
            call(ds, index)
    with pytest.raises(RenderError, match="out of range"):
        render.decode_frame(ds, -1)


def test_transfer_syntax_not_decodable_here() -> None:
    ds = load("JPEG2000.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # J2K Part 2: no decoder
    with pytest.raises(RenderError, match="cannot be decoded on this server"):
        render.render_frame(ds, 0)
    assert render.encapsulated_frame(ds, 0)  # the stored bitstream is still served


def test_wrong_access_for_the_encoding() -> None:
    with pytest.raises(RenderError, match="compressed"):
        render.frame_bytes_uncompressed(load("MR_small_RLE.dcm"), 0)
    with pytest.raises(RenderError, match="not encapsulated"):
        render.encapsulated_frame(load("MR_small.dcm"), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"media_type": "image/bmp"}, "not supported"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"window": (40, 0, "linear")}, "window width"),
        ({"window": (40, 0.5, "linear")}, "window width"),
        ({"window": (40, 400, "cubic")}, "window function"),
        ({"window": ("a", 400, "linear")}, "window must be"),
        ({"viewport": (0, 10)}, "viewport"),
    ],
)
def test_invalid_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render.render_frame(load("CT_small.dcm"), 0, **kwargs)  # type: ignore[arg-type]


def test_truncated_and_oversized_pixel_data() -> None:
    ds = load("MR_small.dcm")
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(RenderError, match="fewer than"):
        render.frame_bytes_uncompressed(ds, 0)
    with pytest.raises(RenderError):
        render.render_frame(ds, 0)
    huge = load("MR_small.dcm")
    huge.Rows = huge.Columns = 65535
    with pytest.raises(RenderError, match="exceeds"):
        render.render_frame(huge, 0)


# -- shared real files, when the folder is there --------------------------------------------------


def test_same_mr_slice_in_nine_syntaxes_decodes_identically() -> None:
    reference = render.decode_frame(shared("compressed/same_mr_9_syntaxes/1.dcm"), 0)
    for n in range(2, 10):
        ds = shared(f"compressed/same_mr_9_syntaxes/{n}.dcm")
        assert np.array_equal(render.decode_frame(ds, 0), reference), n


def test_shared_multiframe_and_fragmented_files() -> None:
    xa = shared("multiframe/XA_96f_jpeg.dcm")
    assert render.number_of_frames(xa) == 96
    last = render.encapsulated_frame(xa, 95)
    assert last[:2] == b"\xff\xd8"  # a JPEG bitstream
    assert image(render.render_frame(xa, 95, viewport=(64, 64))).size[0] <= 64
    fragmented = shared("compressed/CT_RLE_multiple_fragments.dcm")
    assert render.decode_frame(fragmented, 0).shape == (512, 512)


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("malformed/oob_rows_cols_65535.dcm", "exceeds"),
        ("malformed/MR_truncated.dcm", "less than expected"),
        ("compressed/by_ts_uid/1.2.840.10008.1.2.4.51.dcm", "cannot decode"),  # WG04 SOS defect
        ("malformed/GH1146_no_pixels.dcm", "empty"),
        ("malformed/enhancedMR_24f_no_pixel_data.dcm", "no Pixel Data"),
        ("malformed/GH340_philips_no_meta.dcm", "Bits Allocated"),
    ],
)
def test_shared_broken_files_fail_with_render_error(relative: str, message: str) -> None:
    ds = shared(relative)
    with pytest.raises(RenderError, match=message):
        render.render_frame(ds, 0)


def test_shared_raw_monochrome1_file_without_file_meta() -> None:
    # ACR-NEMA style Fuji CR: no Part 10 header, MONOCHROME1, 10 bits.
    path = SHARED / "malformed" / "CR-MONO1-10-chest_no_meta"
    if not path.is_file():
        pytest.skip("shared test data folder not present")
    ds = pydicom.dcmread(path, force=True)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    out = pixels(render.render_frame(ds, 0, media_type="image/png"))
    assert out.shape == (440, 440)
    as_mono2 = copy.deepcopy(ds)
    as_mono2.PhotometricInterpretation = "MONOCHROME2"
    assert np.array_equal(
        out, 255 - pixels(render.render_frame(as_mono2, 0, media_type="image/png"))
    )
    assert getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta
