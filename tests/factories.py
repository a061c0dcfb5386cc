"""Builders of synthetic DICOM objects and DICOMweb request bodies for tests."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def make_ct(
    *,
    patient_id: str = "P0001",
    patient_name: str = "Wang^XiaoDong",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    size: int = 32,
    charset: str | None = "ISO_IR 192",
    **attrs: Any,
) -> Dataset:
    """A small CT image with random (not constant) pixels and a complete header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A" + secrets.token_hex(3)
    ds.StudyDescription = "CT CHEST"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0, 0, float(instance_number)]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(instance_number)
    ds.PixelData = rng.integers(0, 4000, (size, size), dtype=np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: Iterable[bytes], *, content_type: str = "application/dicom",
              boundary: str = "testboundary123") -> tuple[bytes, str]:
    body = b""
    for part in parts:
        body += (f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").encode()
        body += part + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """Parts of a multipart/related body as (part Content-Type, payload)."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip().strip('"')
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        part_type = ""
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-type:"):
                part_type = line.split(":", 1)[1].strip()
        parts.append((part_type, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts
