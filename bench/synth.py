"""Synthetic CT series for benchmarks: body-like 16-bit slices with full CT Image Storage headers.

Pixels are a chest/abdomen phantom (body ellipse with fat, muscle, soft tissue and organs,
lungs, heart, spine, ribs, table, noise) whose anatomy varies smoothly with slice position,
so compression and rendering behave like CT rather than like constant pixels. UIDs derive
from the inputs, so the same call gives the same files and the bench can reuse its cache.

Run ``python bench/synth.py OUT --studies N --slices M`` to write files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

FOV_MM = 380.0  # typical adult body reconstruction field of view
_UID_NS = uuid.UUID("6f1c2a52-8f0e-4a55-9d0b-6b7a3c1e2d40")
_FAMILY = ["Virtanen", "Korhonen", "Smith", "Garcia", "Nguyen", "Müller", "Rossi", "Kowalski"]
_GIVEN = ["Anna", "Mikko", "John", "Maria", "Linh", "Jonas", "Giulia", "Piotr", "Aino", "Omar"]


def make_uid(*parts: object) -> UID:
    """Return a deterministic ``2.25.`` UID (PS3.5 B.2) derived from ``parts``."""
    return UID(f"2.25.{uuid.uuid5(_UID_NS, '/'.join(map(str, parts))).int}")


Nodule = tuple[float, float, float, float]
"""An inserted sphere: centre x, y, z (patient mm, LPS) and diameter (mm)."""
NODULE_HU = 30.0  # solid nodule


class Patient(TypedDict):
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str


class _Phantom:
    """Paints HU slices of a chest-to-pelvis phantom on a ``size`` x ``size`` grid."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.spacing = FOV_MM / size
        # Pixel centres in mm, patient coordinates: +x = patient left, +y = posterior (LPS).
        self.axis = ((np.arange(size, dtype=np.float32) + 0.5) * self.spacing - FOV_MM / 2)
        r2 = self.axis[None, :] ** 2 + self.axis[:, None] ** 2
        self.outside_fov = r2 > (FOV_MM / 2) ** 2
        self.rng = rng
        self.rib_phase = rng.uniform(0, 2 * math.pi, 12)

    def _box(self, c: float, r: float) -> slice:
        lo = int(max(0, (c - r + FOV_MM / 2) / self.spacing))
        hi = int(min(self.size, (c + r + FOV_MM / 2) / self.spacing + 1))
        return slice(lo, max(lo, hi))

    def ellipse(
        self, img: np.ndarray, cx: float, cy: float, a: float, b: float,
        value: float | np.ndarray,
    ) -> None:
        """Set ``value`` inside the ellipse; only its bounding box is computed (speed)."""
        if a <= 0 or b <= 0:
            return
        rows, cols = self._box(cy, b), self._box(cx, a)
        dx = ((self.axis[cols] - cx) / a) ** 2
        dy = ((self.axis[rows] - cy) / b) ** 2
        inside = (dx[None, :] + dy[:, None]) < 1.0
        sub = img[rows, cols]
        if isinstance(value, np.ndarray):
            sub[inside] = value[rows, cols][inside]
        else:
            sub[inside] = value

    def slice_hu(self, t: float, z: float = 0.0,
                 nodules: Sequence[Nodule] = ()) -> np.ndarray:
        """HU image at relative position ``t`` (0 = lung apex, 1 = pelvis); ``nodules``
        (spheres in patient mm) are painted where this slice (at ``z`` mm) cuts them."""
        n, x = self.size, self.axis
        img = np.full((n, n), -1000.0, dtype=np.float32)
        bump = math.sin(math.pi * t)
        a, b = 160 + 18 * bump, 105 + 12 * math.sin(math.pi * min(1.0, 1.3 * t))
        cy = -10.0
        # Table under the patient: carbon-fibre top and a hollow core.
        top = cy + b + 4
        rows, cols = self._box(top + 9, 9), self._box(0, 215)
        img[rows, cols] = 150.0
        rows = self._box(top + 9, 5)
        img[rows, self._box(0, 200)] = -700.0
        fat = 12 + 8 * t
        muscle = 9.0
        self.ellipse(img, 0, cy, a, b, -100.0)
        self.ellipse(img, 0, cy, a - fat, b - fat, 55.0)
        ai, bi = a - fat - muscle, b - fat - muscle
        # Organs and vessels differ by tens of HU; a smooth separable field gives that texture.
        field = 35 + 12 * np.sin(x / 37 + 3 * t)[None, :] * np.cos(x / 29 - 2 * t)[:, None]
        self.ellipse(img, 0, cy, ai, bi, field)
        # Thorax: lungs, heart, ribs over the first ~45 % of the range.
        lung = math.sin(math.pi * min(1.0, t / 0.45)) ** 0.6 if t < 0.45 else 0.0
        if lung > 0.02:
            tex = -850 + 45 * np.sin(x / 6 + 9 * t)[None, :] * np.sin(x / 7 - 7 * t)[:, None]
            for side in (-1, 1):
                self.ellipse(img, side * 0.48 * ai, cy - 5, 0.36 * ai * lung,
                             0.78 * bi * lung, tex)
            heart = math.sin(math.pi * min(1.0, max(0.0, (t - 0.12) / 0.33)))
            self.ellipse(img, 22, cy - 18, 58 * heart, 47 * heart, 42.0)
            for k, phase in enumerate(self.rib_phase):
                if math.sin(40 * t + phase) > -0.2:  # rib sections come and go along z
                    ang = math.radians(200 + 140 * (k % 6) / 5 + 180 * (k // 6))
                    rx, ry = (ai + 4) * math.cos(ang), cy + (bi + 4) * math.sin(ang)
                    self.ellipse(img, rx, ry, 7, 5, 750.0)
                    self.ellipse(img, rx, ry, 4.5, 2.5, 200.0)
        # Abdomen: liver, kidneys, bowel gas.
        liver = math.sin(math.pi * min(1.0, max(0.0, (t - 0.38) / 0.38)))
        self.ellipse(img, -0.38 * ai, cy - 5, 0.52 * ai * liver, 0.62 * bi * liver, 62.0)
        kidney = math.sin(math.pi * min(1.0, max(0.0, (t - 0.58) / 0.27)))
        for side in (-1, 1):
            self.ellipse(img, side * 62, cy + b - 62, 24 * kidney, 34 * kidney, 150.0)
            self.ellipse(img, side * 62, cy + b - 62, 14 * kidney, 22 * kidney, 30.0)
        if t > 0.55:
            for k in range(4):
                gx = 60 * math.sin(3.1 * k + 5 * t)
                gy = cy - 30 + 25 * math.cos(2.3 * k + 4 * t)
                self.ellipse(img, gx, gy, 12 + 4 * k, 8 + 2 * k, -900.0)
        # Spine: cortical rim, cancellous body, canal, spinous process; aorta in front.
        sy = cy + b - 62
        self.ellipse(img, 0, sy, 20, 17, 900.0)
        self.ellipse(img, 0, sy, 17, 14, 260.0)
        self.ellipse(img, 0, sy + 25, 8, 7, 20.0)
        self.ellipse(img, 0, sy + 40, 5, 12, 700.0)
        self.ellipse(img, 14, sy - 32, 12, 12, 45.0 + 120 * (t < 0.6))
        for nx, ny, nz, diameter in nodules:
            r2 = (diameter / 2) ** 2 - (z - nz) ** 2
            if r2 > 0:
                self.ellipse(img, nx, ny, math.sqrt(r2), math.sqrt(r2), NODULE_HU)
        img += self.rng.standard_normal((n, n), dtype=np.float32) * 12.0
        img[self.outside_fov] = -3024.0  # scanners pad outside the reconstruction circle
        return img


def make_ct_series(
    n_slices: int,
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    birth_date: str = "19600101",
    sex: str = "O",
    study_datetime: dt.datetime | None = None,
    accession_number: str | None = None,
    institution: str = "Cloudfilm Regional Hospital",
    series_number: int = 2,
    size: int = 512,
    slice_thickness: float = 1.25,
    seed: int = 0,
    t_range: tuple[float, float] = (0.0, 1.0),
    nodules: Sequence[Nodule] = (),
) -> Iterator[Dataset]:
    """Yield ``n_slices`` CT Image Storage datasets of one axial series, head to feet.

    Parameters
    ----------
    n_slices : int
        Number of slices; anatomy spans chest to pelvis whatever the count.
    patient_id, patient_name : str
        PatientID and PatientName (``Family^Given``).
    study_uid, series_uid : str, optional
        Derived from the patient, ``seed`` and ``series_number`` when omitted.
    size : int
        Rows and Columns; pixel spacing keeps a 380 mm field of view. 512 gives ~525 KB.
    seed : int
        Seeds the noise and the derived UIDs.
    t_range : tuple of float
        The part of the chest-to-pelvis range the series spans ((0, 0.4): the thorax).
    nodules : sequence of (x, y, z, diameter)
        Spheres of solid tissue (``NODULE_HU``) inserted at known places, in patient mm
        (slice ``i`` is at z = -i * slice_thickness): the AI sample plug-in's test data.

    References
    ----------
    PS3.3 A.3 (CT Image IOD), C.7.6.2 (Image Plane), C.8.2.1 (CT Image).
    """
    rng = np.random.default_rng([seed, *patient_id.encode()])
    phantom = _Phantom(size, rng)
    when = study_datetime or dt.datetime(2024, 1, 1, 8) + dt.timedelta(
        minutes=int(rng.integers(0, 60 * 24 * 365))
    )
    study_uid = study_uid or make_uid("study", patient_id, seed)
    series_uid = series_uid or make_uid(study_uid, "series", series_number)
    frame_uid = make_uid(series_uid, "frame")
    accession = accession_number or f"A{int(rng.integers(10**8, 10**9))}"
    origin = -FOV_MM / 2 + phantom.spacing / 2
    for i in range(n_slices):
        t = t_range[0] + (t_range[1] - t_range[0]) * i / max(1, n_slices - 1)
        z = -i * slice_thickness  # head first supine: z decreases towards the feet
        hu = phantom.slice_hu(t, z, nodules)
        pixels = np.clip(np.rint(hu + 1024), -32768, 32767).astype("<i2")
        sop_uid = make_uid(series_uid, i)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = when.strftime("%H%M%S")
        ds.ContentTime = (when + dt.timedelta(seconds=i // 10)).strftime("%H%M%S")
        ds.AccessionNumber = accession
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.InstitutionName = institution
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = "CT CHEST ABDOMEN"
        ds.SeriesDescription = f"Axial {slice_thickness:g}mm"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = sex
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{slice_thickness:g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{z:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [f"{phantom.spacing:.6f}"] * 2
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = pixels.tobytes()
        yield ds


def to_bytes(ds: Dataset) -> bytes:
    """Encode ``ds`` as a Part 10 file (explicit VR little endian)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def random_patient(rng: np.random.Generator, index: int) -> Patient:
    """Patient demographics for synthetic study ``index``."""
    born = dt.date(1930, 1, 1) + dt.timedelta(days=int(rng.integers(0, 80 * 365)))
    return {
        "patient_id": f"P{index:07d}",
        "patient_name": f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
        "birth_date": born.strftime("%Y%m%d"),
        "sex": str(rng.choice(["F", "M"])),
    }


def make_small_studies(
    n_studies: int, *, n_patients: int, size: int = 64, seed: int = 0
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(patient_id, part10_bytes)`` for studies of one small CT instance each.

    Study ``k`` belongs to patient ``k % n_patients``. To fill an index with 10,000 studies
    in seconds, 16 template slices are re-labelled instead of painting each one.
    """
    rng = np.random.default_rng(seed)
    templates = list(make_ct_series(16, patient_id="TEMPLATE", patient_name="Template^T",
                                    size=size, seed=seed))
    patients = [random_patient(rng, p) for p in range(n_patients)]
    for k in range(n_studies):
        patient = patients[k % n_patients]
        ds = templates[k % len(templates)]
        ds.PatientID = patient["patient_id"]
        ds.PatientName = patient["patient_name"]
        ds.PatientBirthDate = patient["birth_date"]
        ds.PatientSex = patient["sex"]
        ds.AccessionNumber = f"S{k:09d}"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = (
            dt.date(2015, 1, 1) + dt.timedelta(days=k % 3650)
        ).strftime("%Y%m%d")
        ds.StudyInstanceUID = make_uid("small", seed, k)
        ds.SeriesInstanceUID = make_uid("small", seed, k, "series")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = make_uid(
            "small", seed, k, "instance"
        )
        yield patient["patient_id"], to_bytes(ds)


def write_ct_study(folder: Path, n_slices: int, **kwargs: Any) -> list[Path]:
    """Write one CT series as ``folder/NNNN.dcm``; ``kwargs`` go to :func:`make_ct_series`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(make_ct_series(n_slices, **kwargs)):
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--studies", type=int, default=1)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start, count, size = time.perf_counter(), 0, 0
    for s in range(args.studies):
        paths = write_ct_study(args.out / f"study-{s:05d}", args.slices, size=args.size,
                               seed=args.seed, **random_patient(rng, s))
        count += len(paths)
        size += sum(p.stat().st_size for p in paths)
    took = time.perf_counter() - start
    print(f"{count} instances, {size / count / 1000:.0f} KB each, "
          f"{count / took * 60:.0f} slices/min -> {args.out}")


if __name__ == "__main__":
    main()
