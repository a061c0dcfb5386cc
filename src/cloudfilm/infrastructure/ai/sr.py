"""AI results as DICOM: a Comprehensive 3D SR with TID 1500 (Measurement Report) made with
highdicom, one measurement group per finding (tracking id, finding type and site, a circle
on the source image, diameter, certainty, the algorithm's name and version).

Marked as machine-made in every place a reader looks: the observer is a *device* (the
algorithm, TID 1004), never a person; the series description says "AI"; the document is
neither verified nor complete (VerificationFlag UNVERIFIED, CompletionFlag PARTIAL); the
report intake of the archive does not take a device-observed SR for a doctor's report
(``infrastructure.reports.dicom.is_device_observed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForRegion,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cloudfilm.infrastructure.ai.plugin import Finding

SERIES_DESCRIPTION = "AI 辅助结果 AI-GENERATED, NOT A DOCTOR'S REPORT"
"""The description of every AI result series (what a viewer's series list shows)."""
SERIES_NUMBER = 9900
_CT_CHEST = CodedConcept("24627-2", "LN", "CT Chest")
_LABELS = {"nodule": codes.SCT.Nodule}


@dataclass(frozen=True, slots=True)
class AlgorithmInfo:
    name: str
    version: str
    vendor: str
    device_uid: str
    """A stable UID for the algorithm as an observer device."""


def measurement_report(source: Sequence[Dataset], findings: Sequence[Finding],
                       algorithm: AlgorithmInfo, *, series_uid: str, sop_uid: str,
                       instance_number: int = 1) -> Dataset:
    """The SR of ``findings`` made on ``source`` (the series the algorithm read).

    ``source`` gives the evidence (patient, study, referenced images): every image a
    finding names must be in it.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    algorithm_id = AlgorithmIdentification(name=algorithm.name[:64],
                                           version=algorithm.version[:64],
                                           manufacturer=algorithm.vendor[:64] or None)
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name[:64],
            manufacturer_name=algorithm.vendor[:64] or None,
            model_name=algorithm.version[:64]))
    groups: list[PlanarROIMeasurementsAndQualitativeEvaluations
                 | MeasurementsAndQualitativeEvaluations] = []
    for number, finding in enumerate(findings, start=1):
        image = by_uid[finding.sop_instance_uid]
        # Without PixelSpacing the circle's radius is taken as given in pixels.
        spacing = float(image.get("PixelSpacing", [1.0, 1.0])[1] or 1.0)
        radius_px = max(finding.diameter_mm / 2 / spacing, 0.5)
        # Graphic data are (column, row) in pixel-matrix coordinates (1-based centre of
        # the top-left pixel is (0.5, 0.5)): centre, then a point on the circle.
        x, y = finding.column + 0.5, finding.row + 0.5
        region = ImageRegion(
            graphic_type=GraphicTypeValues.CIRCLE,
            graphic_data=np.array([[x, y], [x + radius_px, y]]),
            source_image=SourceImageForRegion(str(image.SOPClassUID),
                                              str(image.SOPInstanceUID)))
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=generate_uid(),
                                                   identifier=f"{finding.label} {number}"),
            referenced_region=region,
            finding_type=_LABELS.get(finding.label, codes.DCM.ClinicalFinding),
            finding_sites=[FindingSite(codes.SCT.Lung)],
            algorithm_id=algorithm_id,
            measurements=[
                Measurement(name=codes.SCT.Diameter, value=float(finding.diameter_mm),
                            unit=codes.UCUM.Millimeter, algorithm_id=algorithm_id),
                Measurement(name=codes.DCM.CertaintyOfFinding,
                            value=round(100.0 * float(finding.score), 1),
                            unit=codes.UCUM.Percent, algorithm_id=algorithm_id),
            ]))
    summary = (codes.DCM.AllAlgorithmsSucceededWithFindings if findings
               else codes.DCM.AllAlgorithmsSucceededWithoutFindings)
    groups.append(MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(),
                                               identifier="CAD summary"),
        algorithm_id=algorithm_id,
        qualitative_evaluations=[QualitativeEvaluation(
            codes.DCM.CADProcessingAndFindingsSummary, summary)]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=_CT_CHEST,
        imaging_measurements=groups)
    evidence = [_header(by_uid[u]) for u in sorted({f.sop_instance_uid for f in findings})] \
        or [_header(source[0])]
    sr = Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=series_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=f"cloudfilm AI: {algorithm.vendor or algorithm.name}"[:64],
        is_complete=False, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION)
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr


_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
          "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber")


def _header(ds: Dataset) -> Dataset:
    """The evidence's header without pixels, with the study and patient attributes the SR
    copies present (type 2: empty when the source lacks them)."""
    out = Dataset()
    for element in ds:
        if element.tag != 0x7FE00010:
            out.add(element)
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


__all__ = ["SERIES_DESCRIPTION", "AlgorithmInfo", "hd", "measurement_report"]
