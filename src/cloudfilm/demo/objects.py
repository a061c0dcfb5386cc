"""DICOM objects of a demo exam: complete headers, synthetic pixels, deterministic bytes.

Every hospital writes in its own character set (GB18030 or UTF-8), numbers its patients
its own way, and carries the resident ID number in OtherPatientIDsSequence with the issuer
``CN-RESIDENT-ID``, which is how the master patient index will link them (PS3.3 C.7.1.1).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from cloudfilm.demo import images
from cloudfilm.demo.province import NATIONAL_ID_ISSUER, Exam, SeriesPlan, make_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
}
_MANUFACTURERS = {"CT": ("Synthetic", "DemoCT 64"), "MR": ("Synthetic", "DemoMR 1.5T"),
                  "DX": ("Synthetic", "DemoDR"), "US": ("Synthetic", "DemoUS C5-1")}


def exam_datasets(exam: Exam, seed: int) -> Iterator[Dataset]:
    """Yield the exam's instances, series by series, with pixels painted on the fly.

    References
    ----------
    PS3.3 A.3 (CT), A.4 (MR), A.26 (DX), A.6 (US).
    """
    for series in exam.series:
        rng = np.random.default_rng([seed, exam.index, series.number])
        ribs = rng.uniform(0, 2 * np.pi, 12)
        for i in range(series.images):
            ds = _base(exam, series, i)
            _pixels(ds, exam, series, i, rng, ribs)
            yield ds


def to_part10(ds: Dataset) -> bytes:
    """Encode ``ds`` as a Part 10 file (explicit VR little endian)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def set_patient(ds: Dataset, exam: Exam) -> None:
    """The patient module as the exam's hospital writes it (local ID, national ID in
    Other Patient IDs): every object of one exam, images and report, carries the same."""
    resident, hospital = exam.resident, exam.hospital
    ds.PatientName = resident.dicom_name
    ds.PatientID = resident.local_patient_id(hospital, exam.hospital_index)
    ds.IssuerOfPatientID = hospital.code
    other = Dataset()
    other.PatientID = resident.national_id
    other.IssuerOfPatientID = NATIONAL_ID_ISSUER
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = resident.birth_date.strftime("%Y%m%d")
    ds.PatientSex = resident.sex


def _base(exam: Exam, series: SeriesPlan, i: int) -> Dataset:
    resident, hospital = exam.resident, exam.hospital
    sop_class = SOP_CLASSES[exam.modality]
    sop_uid = make_uid(series.uid, i)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = hospital.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    when = exam.performed
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = when.strftime("%H%M%S")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0800"
    ds.AccessionNumber = exam.accession
    ds.Modality = exam.modality
    ds.Manufacturer, ds.ManufacturerModelName = _MANUFACTURERS[exam.modality]
    ds.InstitutionName = hospital.name
    ds.StationName = hospital.ae_title
    ds.ReferringPhysicianName = exam.referring
    ds.StudyDescription = exam.description
    ds.SeriesDescription = series.description
    set_patient(ds, exam)
    age = (when.date() - resident.birth_date).days // 365
    ds.PatientAge = f"{max(0, age):03d}Y"
    ds.BodyPartExamined = exam.body_part
    ds.StudyInstanceUID = exam.study_uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = str(exam.index)
    ds.SeriesNumber = series.number
    ds.InstanceNumber = i + 1
    return ds


def _pixels(ds: Dataset, exam: Exam, series: SeriesPlan, i: int, rng: np.random.Generator,
            ribs: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = series.rows, series.columns
    if exam.modality == "CT":
        _ct(ds, series, i, rng, ribs, exam.nodule)
    elif exam.modality == "MR":
        _mr(ds, series, i, rng)
    elif exam.modality == "DX":
        _dx(ds, series, rng)
    else:
        _us(ds, exam, i, rng)


def _ct(ds: Dataset, series: SeriesPlan, i: int, rng: np.random.Generator,
        ribs: np.ndarray, nodule: tuple[float, float, float, float] | None = None) -> None:
    thickness = 1.25
    spacing = images.CT_FOV_MM / series.rows
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.FrameOfReferenceUID = make_uid(ds.StudyInstanceUID, "frame")
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [f"{spacing:.6f}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if series.kind == "scout":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        hu = images.dr_chest(series.rows, rng) * 0.6 - 1000
        ds.WindowCenter, ds.WindowWidth = "200", "2000"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        t = i / max(1, series.images - 1)
        z = -i * thickness
        origin = -images.CT_FOV_MM / 2 + spacing / 2
        ds.SliceThickness = f"{thickness:g}"
        ds.ConvolutionKernel = "LUNG"
        ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.4f}"
        # Lung window first, mediastinal second: what a chest reading starts with.
        ds.WindowCenter, ds.WindowWidth = ["-600", "40"], ["1500", "400"]
        hu = images.ct_chest_slice(series.rows, t, rng, ribs)
        if nodule is not None:
            images.paint_sphere(hu, images.CT_FOV_MM, nodule, z, 40.0)
    ds.PixelData = np.clip(np.rint(hu + 1024), -32768, 32767).astype("<i2").tobytes()


def _mr(ds: Dataset, series: SeriesPlan, i: int, rng: np.random.Generator) -> None:
    thickness = 5.0
    spacing = images.MR_FOV_MM / series.rows
    t = i / max(1, series.images - 1)
    z = -40.0 + i * (thickness + 1.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
    ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
    ds.MagneticFieldStrength = "1.5"
    ds.EchoTime = {"T1": "12", "T2": "100", "FLAIR": "120", "DWI": "85"}[series.kind]
    ds.RepetitionTime = {"T1": "500", "T2": "4000", "FLAIR": "9000", "DWI": "5000"}[series.kind]
    ds.SliceThickness, ds.SpacingBetweenSlices = f"{thickness:g}", f"{thickness + 1:g}"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = make_uid(ds.StudyInstanceUID, "frame")
    ds.PositionReferenceIndicator = ""
    origin = -images.MR_FOV_MM / 2 + spacing / 2
    ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{z:.4f}"
    ds.PixelSpacing = [f"{spacing:.6f}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "600", "1200"
    ds.PixelData = images.mr_head_slice(series.rows, t, series.kind, rng).astype("<u2").tobytes()


def _dx(ds: Dataset, series: SeriesPlan, rng: np.random.Generator) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = series.kind
    ds.KVP = "125"
    ds.ImagerPixelSpacing = ds.PixelSpacing = [f"{430 / series.rows:.4f}"] * 2
    ds.PatientOrientation = ["L", "F"] if series.kind == "PA" else ["A", "F"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "1600", "2800"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    ds.PixelData = images.dr_chest(series.rows, rng).astype("<u2").tobytes()


def _us(ds: Dataset, exam: Exam, i: int, rng: np.random.Generator) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    region = Dataset()  # PS3.3 C.8.5.5: where the B-mode image sits, and its scale
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.03
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    pixels = images.us_abdomen(ds.Rows, ds.Columns, rng, exam.index + i)
    ds.PixelData = pixels.astype(np.uint8).tobytes()
