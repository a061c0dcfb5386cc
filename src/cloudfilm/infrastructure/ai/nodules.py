"""The sample plug-in: lung-nodule *candidates* on chest CT, on the CPU, by classical image
processing. A demonstration of the plug-in door, not a clinical device: it finds solid,
roughly spherical blobs surrounded by lung, which is what the synthetic phantom's inserted
nodules are; it knows nothing of vessels, juxta-pleural nodules or ground glass.

1. Stack the slices into a HU volume (sorted along the slice normal).
2. Lungs: 3-D connected components of air (< -400 HU) that do not touch the in-plane edge
   of the volume (outside air, the table) and are large (> ``MIN_LUNG_ML``; bowel gas is
   smaller); holes filled slice by slice, so what the lung surrounds belongs to it.
3. Candidates: components of soft tissue (> -300 HU) inside the filled lungs.
4. Kept when the equivalent-sphere diameter is 3-30 mm and the shape is compact: extents
   along the three axes within a factor ``MAX_ELONGATION`` of each other. The score is the
   ratio of the blob's volume to the sphere on its largest extent (1 for a ball).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from cloudfilm.infrastructure.ai.plugin import Finding

AIR_HU = -400.0
TISSUE_HU = -300.0
MIN_LUNG_ML = 50.0
MIN_DIAMETER_MM = 3.0
MAX_DIAMETER_MM = 30.0
MAX_ELONGATION = 2.0


class NotAVolumeError(ValueError):
    """The series is not a stack of parallel axial images with geometry."""


def _geometry(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        orient = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        origin = np.array([float(v) for v in ds.ImagePositionPatient], dtype=float)
        spacing = np.array([float(v) for v in ds.PixelSpacing], dtype=float)
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotAVolumeError(f"no image plane geometry: {exc}") from exc
    row_dir, col_dir = orient[:3], orient[3:]
    return origin, row_dir, col_dir, spacing


def volume(series: Sequence[Dataset]) -> tuple[np.ndarray, list[Dataset], np.ndarray,
                                              np.ndarray, np.ndarray, np.ndarray, float]:
    """HU volume (z, y, x), the slices in that order, and the geometry: first origin, row
    and column direction cosines, (row, column) spacing and slice spacing (mm)."""
    slices = [ds for ds in series if "PixelData" in ds and int(ds.get("NumberOfFrames", 1)) == 1]
    if len(slices) < 3:
        raise NotAVolumeError("fewer than three single-frame images")
    _, row_dir, col_dir, spacing = _geometry(slices[0])
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda d: float(np.dot(_geometry(d)[0], normal)))
    positions = np.array([float(np.dot(_geometry(d)[0], normal)) for d in slices])
    gaps = np.diff(positions)
    if np.any(gaps <= 0) or (gaps.max() - gaps.min()) > 0.1 * gaps.mean():
        raise NotAVolumeError("slices are not evenly spaced")
    shapes = {(int(d.Rows), int(d.Columns)) for d in slices}
    if len(shapes) != 1:
        raise NotAVolumeError("slices differ in size")
    hu = np.stack([d.pixel_array.astype(np.float32) * float(d.get("RescaleSlope", 1) or 1)
                   + float(d.get("RescaleIntercept", 0) or 0) for d in slices])
    origin = _geometry(slices[0])[0]
    return hu, slices, origin, row_dir, col_dir, spacing, float(gaps.mean())


def lung_mask(hu: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Filled lung mask (see the module's docstring, step 2)."""
    air, _ = ndimage.label(hu < AIR_HU)
    edge = np.unique(np.concatenate([air[:, 0, :].ravel(), air[:, -1, :].ravel(),
                                     air[:, :, 0].ravel(), air[:, :, -1].ravel()]))
    sizes = np.bincount(air.ravel())
    keep = np.zeros(sizes.shape, dtype=bool)
    keep[sizes * voxel_ml >= MIN_LUNG_ML] = True
    keep[edge] = False
    keep[0] = False
    lungs = keep[air]
    return np.stack([ndimage.binary_fill_holes(s) for s in lungs])


def detect(series: Sequence[Dataset]) -> list[Finding]:
    """Nodule candidates of one CT series (the plug-in callable)."""
    hu, slices, origin, row_dir, col_dir, spacing, dz = volume(series)
    dy, dx = float(spacing[0]), float(spacing[1])
    voxel_mm3 = dx * dy * dz
    filled = lung_mask(hu, voxel_mm3 / 1000.0)
    blobs, _count = ndimage.label(filled & (hu > TISSUE_HU))
    findings: list[Finding] = []
    normal = np.cross(row_dir, col_dir)
    for index, box in enumerate(ndimage.find_objects(blobs), start=1):
        if box is None:
            continue
        part = blobs[box] == index
        voxels = int(part.sum())
        diameter = (6.0 * voxels * voxel_mm3 / math.pi) ** (1.0 / 3.0)
        if not MIN_DIAMETER_MM <= diameter <= MAX_DIAMETER_MM:
            continue
        extents = [(s.stop - s.start) * d for s, d in zip(box, (dz, dy, dx), strict=True)]
        if max(extents) > MAX_ELONGATION * min(extents):
            continue
        score = min(1.0, voxels * voxel_mm3 / (math.pi / 6.0 * max(extents) ** 3))
        cz, cy, cx = (float(c) + s.start for c, s in
                      zip(ndimage.center_of_mass(part), box, strict=True))
        k = round(cz)
        centre = origin + normal * cz * dz + col_dir * cy * dy + row_dir * cx * dx
        findings.append(Finding(
            label="nodule", centre_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
            diameter_mm=round(diameter, 2), score=round(score, 3),
            sop_instance_uid=str(slices[k].SOPInstanceUID), row=cy, column=cx))
    findings.sort(key=lambda f: -f.diameter_mm)
    return findings
