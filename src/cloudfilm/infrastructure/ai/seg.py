"""AI results as a DICOM Segmentation (highdicom): one binary segment per finding, the
sphere its centre and diameter describe, painted on the source series' own grid, so that a
viewer can overlay it. Marked as machine-made like the SR: segment algorithm type
AUTOMATIC with the algorithm's identification (family "Artificial Intelligence"), the
same series description, the algorithm as the manufacturer model.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cloudfilm.infrastructure.ai.nodules import volume
from cloudfilm.infrastructure.ai.plugin import Finding
from cloudfilm.infrastructure.ai.sr import SERIES_DESCRIPTION, AlgorithmInfo

SERIES_NUMBER = 9901
_TYPES = {"nodule": codes.SCT.Nodule}


def sphere_masks(series: Sequence[Dataset], findings: Sequence[Finding]
                 ) -> tuple[list[Dataset], np.ndarray]:
    """The slices in volume order and a (slices, rows, columns, findings) boolean mask."""
    _, slices, origin, row_dir, col_dir, spacing, dz = volume(series)
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    normal = np.cross(row_dir, col_dir)
    r = np.arange(rows, dtype=float)[:, None, None]
    c = np.arange(cols, dtype=float)[None, :, None]
    masks = np.zeros((len(slices), rows, cols, len(findings)), dtype=bool)
    for k in range(len(slices)):
        base = origin + normal * k * dz
        points = (base + col_dir * r * float(spacing[0]) + row_dir * c * float(spacing[1]))
        for n, f in enumerate(findings):
            d2 = ((points - np.asarray(f.centre_mm)) ** 2).sum(axis=-1)
            masks[k, :, :, n] = d2 <= (f.diameter_mm / 2) ** 2
    return slices, masks


def segmentation(series: Sequence[Dataset], findings: Sequence[Finding],
                 algorithm: AlgorithmInfo, *, series_uid: str, sop_uid: str) -> Dataset:
    """The SEG of ``findings`` (at least one) on ``series`` (the images they were found
    on)."""
    if not findings:
        raise ValueError("a segmentation needs at least one finding")
    slices, masks = sphere_masks(series, findings)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version[:64])
    segments = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"{f.label} {n} (AI)"[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=_TYPES.get(f.label, codes.SCT.MorphologicallyAbnormalStructure),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification, anatomic_regions=[codes.SCT.Lung])
        for n, f in enumerate(findings, start=1)]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=series_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=f"cloudfilm AI: {algorithm.vendor or algorithm.name}"[:64],
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64], device_serial_number=algorithm.device_uid,
        series_description=SERIES_DESCRIPTION,
        content_label="AI_RESULT", content_description="AI-generated, not verified")
    return seg


def mask_runs(seg: Dataset) -> list[dict[str, object]]:
    """What a viewer paints of a SEG: per source image and segment, the mask as runs
    ``[row, first column, last column + 1]`` (compact: a sphere is a few dozen runs a
    slice). Decoded by highdicom from the SEG's own frame references, so any SEG made on
    a series' instances reads, not only ours."""
    decoded = hd.seg.Segmentation.from_dataset(seg, copy=False)
    sources = sorted({str(uid) for _, _, uid in decoded.get_source_image_uids()})
    numbers = list(decoded.get_segment_numbers())
    if not sources or not numbers:
        return []
    # (images, rows, columns, segments), in the order of ``sources``; empty where absent.
    pixels = decoded.get_pixels_by_source_instance(
        source_sop_instance_uids=sources, segment_numbers=numbers,
        assert_missing_frames_are_empty=True, skip_overlap_checks=True)
    out: list[dict[str, object]] = []
    for i, sop in enumerate(sources):
        for k, number in enumerate(numbers):
            plane = np.asarray(pixels[i, :, :, k]) > 0
            if not plane.any():
                continue
            runs: list[list[int]] = []
            for r in np.flatnonzero(plane.any(axis=1)):
                row = np.concatenate(([0], plane[r].astype(np.int8), [0]))
                edges = np.flatnonzero(np.diff(row))
                runs.extend([int(r), int(a), int(b)] for a, b in zip(edges[::2], edges[1::2],
                                                                     strict=True))
            out.append({"sop_instance_uid": sop, "segment": int(number), "runs": runs})
    return out
