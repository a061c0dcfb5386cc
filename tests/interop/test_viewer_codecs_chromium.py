"""Every transfer syntax the archive stores plays in the diagnostic viewer (issue 14), in
Debian's headless Chromium with SwiftShader WebGL: JPEG baseline (8-bit lossy), JPEG
lossless (process 14, selection value 1), HTJ2K lossless, an enhanced CT (per-frame
functional groups, made by highdicom from a synthetic volume) and an ultrasound cine (RGB,
JPEG baseline YBR_FULL_422, multi-frame), plus real files of the shared test set when it is
present. (Uncompressed, JPEG-LS, RLE, JPEG 2000 and a multi-frame secondary capture are
covered by test_viewer_chromium.py.)

For each series the viewer's decoded pixels (what the codec handed Cornerstone) are compared
with pydicom's decoding of the stored object (exact for lossless syntaxes, within a JPEG
decoder's rounding for lossy ones), and the screen shows the phantom's bright marker where
the image has it. One world, one server, one browser page for the module. Screenshots under
tests/artifacts/viewer/ (git-ignored)."""

from __future__ import annotations

import base64
import io
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from PIL import Image
from playwright.sync_api import Browser, Page
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    generate_uid,
)
from tests.conftest import SHARED_TESTDATA, TEST_HTTP, TEST_SECURITY
from tests.factories import to_bytes
from tests.interop.chromium import live_server, open_page, require_assets, webgl_browser  # noqa: F401
from tests.interop.test_viewer_chromium import SIZE, phantom

from cloudfilm.app import build_services
from cloudfilm.config import Settings
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput

pytestmark = pytest.mark.interop

FOLDER = "viewer"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
LOSSY = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000)
RED = (200, 60)  # (column, row) of the cine's red (colour Doppler-like) square
# Real files of /work/shared/testdata/dicom (MANIFEST.md), played when present.
REAL = {
    "real-jpeg-baseline-us-ybr": "compressed/by_ts_uid/1.2.840.10008.1.2.4.50.dcm",
    "real-jpeg-lossless-sv1-ct": "compressed/by_ts_uid/1.2.840.10008.1.2.4.70.dcm",
    "real-enhanced-mr-10f": "multiframe/emri_small_enhancedMR_10f.dcm",
    "real-us-cine-jpeg-30f": "multiframe/US_sonosite_30f_jpeg.dcm",
    "real-jpeg-extended-12bit-nm": "compressed/NM_JPEG_extended_12bit.dcm",
    "real-deflated-ct": "compressed/by_ts_uid/1.2.840.10008.1.2.1.99.dcm",
}


@dataclass
class World:
    services: Services
    base: str
    token: str
    study: str
    series: dict[str, str] = field(default_factory=dict)
    lossy: set[str] = field(default_factory=set)
    # Each frame of a series in the viewer's order: (the stored object, frame index).
    frames: dict[str, list[tuple[bytes, int]]] = field(default_factory=dict)
    rescale: dict[str, tuple[float, float]] = field(default_factory=dict)


def _encapsulated(ds: Dataset, frames: list[bytes], syntax: str) -> None:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def jpeg_baseline(ds: Dataset) -> None:
    """8-bit grey (a radiograph's range): air 0, water 125, bone 250; lossy."""
    hu = np.frombuffer(ds.PixelData, dtype=np.int16).reshape(SIZE, SIZE) - 1024
    grey = np.clip((hu.astype(np.int32) + 1000) // 8, 0, 255).astype(np.uint8)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE
    ds.Modality = "CR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    for name in ("RescaleIntercept", "RescaleSlope"):
        delattr(ds, name)
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.LossyImageCompression = "01"
    _encapsulated(ds, [imagecodecs.jpeg8_encode(grey, level=95)], JPEGBaseline8Bit)


def jpeg_lossless(ds: Dataset) -> None:
    """16-bit unsigned CT, JPEG lossless process 14 with the first-order predictor."""
    raw = np.frombuffer(ds.PixelData, dtype=np.int16).reshape(SIZE, SIZE).astype(np.uint16)
    ds.PixelRepresentation = 0
    _encapsulated(ds, [imagecodecs.jpeg8_encode(raw, lossless=True, predictor=1,
                                                bitspersample=16)], JPEGLosslessSV1)


def htj2k(ds: Dataset) -> None:
    """Signed 16-bit CT, High-Throughput JPEG 2000, reversible."""
    raw = np.frombuffer(ds.PixelData, dtype=np.int16).reshape(SIZE, SIZE)
    _encapsulated(ds, [imagecodecs.htj2k_encode(raw)], HTJ2KLossless)


def us_cine(ds: Dataset, frames: int) -> None:
    """An ultrasound clip: RGB, JPEG baseline YBR_FULL_422, the marker moving frame to
    frame, a red square that stays."""
    encoded = []
    for i in range(frames):
        one = phantom(ds.StudyInstanceUID, ds.SeriesInstanceUID, 9, i, nid=ds.PatientID,
                      frame=generate_uid())
        hu = np.frombuffer(one.PixelData, dtype=np.int16).reshape(SIZE, SIZE) - 1024
        grey = np.clip((hu.astype(np.int32) + 1000) // 8, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        c, r = RED
        rgb[r - 8: r + 8, c - 8: c + 8] = (220, 20, 20)
        encoded.append(imagecodecs.jpeg8_encode(rgb, level=95, subsampling="422"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.Modality = "US"
    for name in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth",
                 "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                 "SliceThickness", "FrameOfReferenceUID"):
        delattr(ds, name)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 50.0
    ds.CineRate = 20
    ds.LossyImageCompression = "01"
    _encapsulated(ds, encoded, JPEGBaseline8Bit)


def enhanced_ct(slices: list[Dataset]) -> Dataset:
    """One Legacy Converted Enhanced CT object (per-frame functional groups) of the slices."""
    first = slices[0]
    enhanced = LegacyConvertedEnhancedCTImage(
        slices, series_instance_uid=first.SeriesInstanceUID, series_number=8,
        sop_instance_uid=generate_uid(), instance_number=1,
        transfer_syntax_uid=ExplicitVRLittleEndian)
    enhanced.SeriesDescription = "Enhanced CT"
    return enhanced


def frames_of(ds: Dataset) -> list[tuple[bytes, int]]:
    data = to_bytes(ds)
    return [(data, i) for i in range(int(getattr(ds, "NumberOfFrames", 1) or 1))]


def reference(frame: tuple[bytes, int]) -> np.ndarray:
    """pydicom's decoding of one frame of the stored object (RGB for colour)."""
    data, index = frame
    try:
        return pixel_array(io.BytesIO(data), index=index)  # one frame only: quicker
    except AttributeError:  # a deflated data set is read whole
        whole = dcmread(io.BytesIO(data))
        return whole.pixel_array if int(getattr(whole, "NumberOfFrames", 1) or 1) == 1 \
            else whole.pixel_array[index]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:
    require_assets()
    folder = tmp_path_factory.mktemp("codecs")
    shutil.copyfile(sqlite_template, folder / "index.sqlite3")
    services = build_services(Settings(
        data_dir=folder / "data", database_url=f"sqlite:///{folder / 'index.sqlite3'}",
        auto_migrate=False, security=TEST_SECURITY, http=TEST_HTTP))
    try:
        nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                                   rng=random.Random(41))
        services.hospitals.register(HospitalInput(
            code="HA", name="示范医院HA", level="tertiary", grade="A",
            national_id_source="patient_id"))
        services.accounts.create_account(NewAccount(
            kind="doctor", username="dr.codecs", password="correct horse battery",
            display_name="王医生", hospital_code="HA", department="放射科"), by=LOCAL_OPERATOR)
        token = services.accounts.sign_in_password("dr.codecs", "correct horse battery",
                                                   requester="test").token
        study = generate_uid()
        with live_server(services) as base:
            world = World(services, base, token, study)
            stored: list[Dataset] = []

            def series(name: str, objects: list[Dataset], *, lossy: bool = False,
                       rescale: tuple[float, float] = (1.0, -1024.0)) -> None:
                world.series[name] = str(objects[0].SeriesInstanceUID)
                world.frames[name] = [f for ds in objects for f in frames_of(ds)]
                world.rescale[name] = rescale
                if lossy:
                    world.lossy.add(name)
                stored.extend(objects)

            def slices(number: int, count: int, change: Any = None) -> list[Dataset]:
                uid, frame = generate_uid(), generate_uid()
                out = []
                for i in range(count):
                    ds = phantom(study, uid, number, i, nid=nid, frame=frame)
                    if change is not None:
                        change(ds)
                    out.append(ds)
                return out

            # The uncompressed phantom first: the series the viewer opens with.
            series("uncompressed", slices(1, 3))
            series("jpeg-baseline", slices(2, 3, jpeg_baseline), lossy=True, rescale=(1, 0))
            series("jpeg-lossless-sv1", slices(3, 3, jpeg_lossless))
            series("htj2k-lossless", slices(4, 3, htj2k))
            series("enhanced-ct", [enhanced_ct(slices(5, 8))])
            [clip] = slices(6, 1)
            us_cine(clip, 6)
            series("us-cine", [clip], lossy=True, rescale=(1, 0))
            for name, relative in REAL.items():
                path = SHARED_TESTDATA / relative
                if not path.exists():
                    continue
                ds = dcmread(path)
                ds.PatientID, ds.StudyInstanceUID = nid, study
                ds.SeriesInstanceUID = generate_uid()
                ds.SeriesDescription = name
                slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(
                    getattr(ds, "RescaleIntercept", 0) or 0)
                series(name, [ds], lossy=ds.file_meta.TransferSyntaxUID in LOSSY,
                       rescale=(slope, intercept))
            items = []
            for ds in stored:
                path = folder / f"{ds.SOPInstanceUID}.dcm"
                path.write_bytes(to_bytes(ds))
                items.append(IngestItem(path))
            results = services.ingest.ingest_files(items, sender=Sender("HA", "HA", "test"))
            assert not [r for r in results if isinstance(r, Exception)], results
            yield world
    finally:
        services.health._db.dispose()


@pytest.fixture(scope="module")
def viewer(world: World, webgl_browser: Browser) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    context, page, errors = open_page(webgl_browser, world.base, token=world.token)
    try:
        page.goto(f"{world.base}/workstation/viewer?study={world.study}")
        page.wait_for_function("() => document.body.dataset.rendered === 'true'",
                               timeout=20000)
        yield page, errors
    finally:
        context.close()


def show(page: Page, uid: str, name: str) -> dict[str, Any]:
    page.locator(f".thumb[data-series='{uid}']").click()
    try:
        page.wait_for_function(
            f"() => {{ const c = window.cloudfilmViewer.state().cells[0]; "
            f"return c.series === '{uid}' && c.count && c.loaded === c.count; }}",
            timeout=15000)
    except Exception:
        page.screenshot(path=str(Path(__file__).resolve().parents[1] / "artifacts" / FOLDER
                                 / f"20-{name}-failed.png"))
        raise AssertionError(page.evaluate("window.cloudfilmViewer.state()")) from None
    page.wait_for_timeout(300)
    cell: dict[str, Any] = page.evaluate("window.cloudfilmViewer.state().cells[0]")
    return cell


def viewer_pixels(page: Page) -> tuple[np.ndarray, bool]:
    got = page.evaluate("window.cloudfilmViewer.pixels(0)")
    assert got is not None
    data = np.frombuffer(base64.b64decode(got["data"]), dtype=TYPED[got["type"]]).astype(
        np.float64)
    rows, columns = got["rows"], got["columns"]
    channels = data.size // (rows * columns)
    image = data.reshape(rows, columns, channels) if channels > 1 else data.reshape(rows, columns)
    if channels == 4:
        image = image[:, :, :3]
    return image, bool(got["scaled"])


def screen(page: Page, name: str) -> Image.Image:
    (Path(__file__).resolve().parents[1] / "artifacts" / FOLDER).mkdir(parents=True,
                                                                     exist_ok=True)
    data = page.screenshot(path=str(Path(__file__).resolve().parents[1] / "artifacts"
                                    / FOLDER / f"20-{name}.png"))
    return Image.open(io.BytesIO(data)).convert("RGB")


def at(page: Page, column: float, row: float) -> tuple[int, int]:
    xy = page.evaluate(f"window.cloudfilmViewer.pixelToPage(0, {column}, {row})")
    return round(xy[0]), round(xy[1])


def patch(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    x, y = xy
    return np.asarray(img.crop((x - 2, y - 2, x + 3, y + 3)), dtype=np.float64).reshape(-1, 3
                                                                                       ).mean(0)


def compare(name: str, got: np.ndarray, scaled: bool, expected: np.ndarray,
            rescale: tuple[float, float], lossy: bool) -> None:
    """The viewer's pixels are pydicom's (modality values when Cornerstone pre-scaled)."""
    ref = expected.astype(np.float64)
    if scaled:
        ref = ref * rescale[0] + rescale[1]
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    diff = np.abs(got - ref)
    if lossy:
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12, (name, diff.mean(),
                                                                     diff.max())
    else:
        assert diff.max() == 0, (name, diff.max(), int((diff > 0).sum()))


TYPED = {"Uint8Array": np.uint8, "Uint8ClampedArray": np.uint8, "Int8Array": np.int8,
         "Uint16Array": np.uint16, "Int16Array": np.int16, "Float32Array": np.float32}
SYNTHETIC = ["jpeg-baseline", "jpeg-lossless-sv1", "htj2k-lossless", "enhanced-ct", "us-cine"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_synthetic_series_plays_with_the_right_pixels(
        world: World, viewer: tuple[Page, list[str]], name: str) -> None:
    page, errors = viewer
    frames = world.frames[name]
    cell = show(page, world.series[name], name)
    assert cell["count"] == len(frames), cell
    if name == "us-cine":
        # Cine plays the clip (the frame on screen changes), then stops where it is.
        shown = cell["index"]
        page.keyboard.press("c")
        page.wait_for_function(
            f"() => window.cloudfilmViewer.state().cells[0].index !== {shown}", timeout=5000)
        page.keyboard.press("c")
        page.wait_for_timeout(300)
        cell = page.evaluate("window.cloudfilmViewer.state().cells[0]")
    index = cell["index"] - 1
    expected = reference(frames[index])
    got, scaled = viewer_pixels(page)
    compare(name, got, scaled, expected, world.rescale[name], name in world.lossy)
    # On screen: the bright marker where this frame has it, not where another frame has it.
    grey = expected if expected.ndim == 2 else expected.mean(axis=2)
    columns = np.nonzero(grey[64] >= grey.max() * 0.9)[0]
    assert columns.size, name
    here = float(columns.mean())
    img = screen(page, name)
    assert patch(img, at(page, here, 64)).mean() > 200, name
    away = here + 30 if here < SIZE / 2 else here - 30
    assert patch(img, at(page, away, 64)).mean() < 160, name
    if name == "us-cine":
        red = patch(img, at(page, *RED))
        assert red[0] > 150 and red[1] < 80 and red[2] < 80, red  # colour kept, RGB order
    assert not [e for e in errors if "403" not in e], errors


# Cornerstone 5.14 decodes JPEG extended 12-bit (1.2.840.10008.1.2.4.51) with its JavaScript
# decoder, which comes out about +15 on every pixel of this NM image against libjpeg (pydicom)
# and libjpeg-turbo (imagecodecs), which agree. Strict: this fails once the codec is fixed.
OFF_BY_AN_OFFSET = pytest.mark.xfail(strict=True, reason="Cornerstone's 12-bit JPEG decoder "
                                     "adds a constant offset (about +15) to this image")


@pytest.mark.parametrize("name", [pytest.param(n, marks=OFF_BY_AN_OFFSET) if "12bit" in n
                                  else n for n in REAL])
def test_a_real_file_plays_with_the_right_pixels(
        world: World, viewer: tuple[Page, list[str]], name: str) -> None:
    page, errors = viewer
    if name not in world.series:
        pytest.skip(f"shared test data not present: {REAL[name]}")
    frames = world.frames[name]
    cell = show(page, world.series[name], name)
    assert cell["count"] == len(frames), cell
    got, scaled = viewer_pixels(page)
    compare(name, got, scaled, reference(frames[cell["index"] - 1]), world.rescale[name],
            name in world.lossy)
    img = np.asarray(screen(page, name).convert("L"))
    box = page.locator(".cell").first.bounding_box()
    assert box is not None
    canvas = img[int(box["y"]): int(box["y"] + box["height"]),
                 int(box["x"]): int(box["x"] + box["width"])]
    assert (canvas > 8).mean() > 0.05, name
    assert not errors, errors
