"""The sample AI plug-in on bench/synth.py phantoms: it finds the spheres it was given (centre
and diameter) and nothing in a clean chest; its SR is AI-marked TID 1500 and re-reads."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from bench.synth import make_ct_series
from pydicom.uid import generate_uid

from cloudfilm.infrastructure.ai.nodules import NotAVolumeError, detect
from cloudfilm.infrastructure.ai.plugin import PluginError, load
from cloudfilm.infrastructure.ai.sr import SERIES_DESCRIPTION, AlgorithmInfo, measurement_report
from cloudfilm.infrastructure.reports.dicom import is_device_observed

# (x, y, z, diameter) in patient mm: inside the phantom's lungs, away from the heart.
NODULES = [(-70.0, -20.0, -40.0, 12.0), (95.0, -20.0, -70.0, 8.0),
           (-80.0, -10.0, -95.0, 20.0), (100.0, -10.0, -30.0, 6.0)]


def _chest(nodules: list[tuple[float, float, float, float]], seed: int = 0) -> list:
    return list(make_ct_series(50, patient_id=f"PH{seed}", patient_name="Phantom^Chest",
                               size=128, slice_thickness=2.5, t_range=(0.05, 0.4),
                               nodules=nodules, seed=seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_every_inserted_nodule_with_its_size(seed: int) -> None:
    series = _chest(NODULES, seed)
    found = detect(list(reversed(series)))  # any order
    assert len(found) == len(NODULES)
    for x, y, z, d in NODULES:
        best = min(found, key=lambda f: math.dist(f.centre_mm, (x, y, z)))
        # Within a voxel (2.97 mm in plane, 2.5 mm between slices) and 1 mm of diameter.
        assert math.dist(best.centre_mm, (x, y, z)) < 2.0, (best, (x, y, z))
        assert abs(best.diameter_mm - d) < 1.0, (best, d)
        assert 0 < best.score <= 1
        image = next(ds for ds in series if ds.SOPInstanceUID == best.sop_instance_uid)
        assert abs(float(image.ImagePositionPatient[2]) - z) <= 1.25


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_clean_chest_has_no_nodule(seed: int) -> None:
    assert detect(_chest([], seed)) == []


def test_not_a_volume_is_refused() -> None:
    with pytest.raises(NotAVolumeError):
        detect(_chest([])[:2])


def test_plugins_load_by_builtin_name_or_module_callable_only() -> None:
    assert load("builtin:lung-nodules") is detect
    assert load("cloudfilm.infrastructure.ai.nodules:detect") is detect
    for bad in ("entry:nobody-installed-this", "os", "cloudfilm.nothing:here",
                "cloudfilm.infrastructure.ai.nodules:MIN_LUNG_ML"):
        with pytest.raises(PluginError):
            load(bad)


def test_sr_is_tid1500_observed_by_a_device_and_rereads() -> None:
    series = _chest(NODULES)
    found = detect(series)
    info = AlgorithmInfo("lung-nodules", "0.1", "cloudfilm demo", str(generate_uid()))
    sr = measurement_report(series, found, info, series_uid=str(generate_uid()),
                            sop_uid=str(generate_uid()))
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert back.SeriesDescription == SERIES_DESCRIPTION
    assert back.VerificationFlag == "UNVERIFIED" and back.CompletionFlag == "PARTIAL"
    assert back.StudyInstanceUID == series[0].StudyInstanceUID
    assert back.PatientID == series[0].PatientID
    assert is_device_observed(back)
    parsed = hd.sr.Comprehensive3DSR.from_dataset(back)
    groups = parsed.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(found)
    diameters = sorted(g.get_measurements()[0].value for g in groups)
    assert diameters == pytest.approx(sorted(f.diameter_mm for f in found))
    # A doctor's report (person observer) stays a report.
    for item in back.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "121005":
            item.ConceptCodeSequence[0].CodeValue = "121006"
    assert not is_device_observed(back)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed "
                    "(.ci/run installs it)")
@pytest.mark.parametrize("nodules", [NODULES, []])
def test_sr_passes_dciodvfy(nodules: list, tmp_path: Path) -> None:
    series = _chest(nodules)
    sr = measurement_report(series, detect(series),
                            AlgorithmInfo("lung-nodules", "0.1", "cloudfilm demo",
                                          str(generate_uid())),
                            series_uid=str(generate_uid()), sop_uid=str(generate_uid()))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                          timeout=60)
    report = done.stdout + done.stderr
    assert "Comprehensive3DSR" in report
    assert "Error" not in report and "Warning" not in report, report


def test_seg_has_one_sphere_per_finding_and_passes_dciodvfy(tmp_path: Path) -> None:
    from cloudfilm.infrastructure.ai.seg import segmentation, sphere_masks

    series = _chest(NODULES[:2])
    found = detect(series)
    slices, masks = sphere_masks(series, found)
    voxel = float(slices[0].PixelSpacing[0]) ** 2 * 2.5
    for n, f in enumerate(found):
        volume = masks[..., n].sum() * voxel
        assert volume == pytest.approx(math.pi / 6 * f.diameter_mm ** 3, rel=0.35)
    seg = segmentation(series, found, AlgorithmInfo("lung-nodules", "0.1", "demo",
                                                    str(generate_uid())),
                       series_uid=str(generate_uid()), sop_uid=str(generate_uid()))
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    back = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))
    assert len(back.SegmentSequence) == len(found)
    assert back.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert back.SeriesDescription == SERIES_DESCRIPTION
    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                              timeout=60)
        assert "Error" not in done.stdout + done.stderr, done.stdout + done.stderr
