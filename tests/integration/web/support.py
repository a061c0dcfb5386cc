"""A small portal world: resident R1 (Wang XiaoDong) with studies at two hospitals, one a
multi-slice CT with a report; resident R2 (Zhao Lei) with one study; R1 is R2's guardian;
doctors at HA. Accounts are made the way residents make them (outbox code, registration)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import orjson
from pydicom.uid import generate_uid
from tests.factories import make_ct, to_bytes
from tests.integration.access.conftest import NID1, NID2, Province
from tests.integration.reports.support import fhir_report

from cloudfilm.services.access.consent import GrantRequest
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity.mpi import Registration

PHONE1 = "13800138001"
PHONE2 = "13900139002"


@dataclass
class Portal:
    province: Province
    ct_study: str
    ct_series: str
    slices: int
    report_id: str


def latest_code(services: Services, phone: str) -> str:
    [message] = services.sms.outbox(phone=phone, limit=1)
    found = re.search(r"\b(\d{6})\b", message.text)
    assert found, message.text
    return found.group(1)


def register(services: Services, phone: str, name: str, nid: str, *,
             hospital: str = "HB") -> None:
    """Register the resident's portal account the way a patient would: the hospital's
    registration feed recorded this phone for its patient (the second factor of issue 11),
    then the patient proves the phone with a code."""
    services.residents.register_patient(hospital, Registration(
        patient_id=nid, national_id=nid, name=name.replace(" ", "^"), phone=phone))
    services.accounts.send_sign_in_code(phone, requester="test-setup")
    services.accounts.register_resident(phone, latest_code(services, phone), name=name,
                                        national_id=nid, requester="test-setup")


def ct_series(services: Services, folder: Path, *, code: str, nid: str, name: str,
              slices: int, size: int = 64, study_date: str = "20250310",
              body_part: str = "CHEST") -> tuple[str, str]:
    """A CT series whose slice i has a bright square at row 4*i % size (a marker that
    moves with the slice) on a mid-grey body."""
    study, series = generate_uid(), generate_uid()
    items = []
    for i in range(1, slices + 1):
        ds = make_ct(patient_id=nid, patient_name=name, study_uid=study, series_uid=series,
                     instance_number=i, size=size, StudyDate=study_date,
                     BodyPartExamined=body_part)
        pixels = np.full((size, size), 1024 + 40, dtype=np.uint16)  # 40 HU: soft tissue
        row = (4 * i) % (size - 8)
        pixels[row:row + 8, 8:24] = 1024 + 1200  # bone-bright marker
        pixels[:, size // 2:] = 1024 - 700  # lung-dark half
        ds.PixelData = pixels.tobytes()
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        items.append(IngestItem(path))
    results = services.ingest.ingest_files(items, sender=Sender(code, f"Hospital {code}",
                                                                "test"))
    assert not any(isinstance(r, Exception) for r in results), results
    return study, series


def build(province: Province, folder: Path, *, slices: int = 40) -> Portal:
    services = province.services
    study, series = ct_series(services, folder, code="HB", nid=NID1, name="Wang^XiaoDong",
                              slices=slices)
    recorded = services.reports.receive_fhir(orjson.dumps(fhir_report(
        key="PORTAL", study_uid=study)), actor=province.hospital("HB"))
    register(services, PHONE1, "Wang XiaoDong", NID1)
    services.residents.add_family_link(province.r2, province.r1, "guardian")
    return Portal(province, study, series, slices, recorded.report_id)


def request_access(province: Province) -> int:
    """Doctor 1 (HA) asks to see R1's studies through the portal."""
    view = province.services.consent.request(province.doctor, GrantRequest(
        purpose="复诊对比", resident_id=province.r1, hours=24))
    return view.id


__all__ = ["NID1", "NID2", "PHONE1", "PHONE2", "Portal", "build", "date", "latest_code",
           "register", "request_access"]
