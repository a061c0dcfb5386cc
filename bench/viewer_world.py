"""The diagnostic viewer's bench data (issue 14): a resident with a 300-slice CT at one
hospital (BH1) and a prior 300-slice CT at another (BH2), a doctor of a third hospital (BH3)
holding an in-person grant to the resident's studies, and the doctor's session token.

Loaded through the services into a data folder (the server of ``server.py`` may already be
running on it: SQLite is shared). Used by ``web_bench.py`` (viewer part) and
``frame_bench.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cloudfilm.app import build_services, configure_dicom_libraries
from cloudfilm.config import Settings
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.access.consent import GrantRequest, InPersonEvidence
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from synth import make_ct_series, to_bytes

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class World:
    token: str  # the doctor's cfs_ session
    study: str  # current CT at BH1
    series: str
    prior_study: str  # prior CT at BH2
    prior_series: str
    grant_id: int
    instances: tuple[str, ...]  # SOP instance UIDs of the current series, in slice order


def load(data: Path, *, slices: int = 300) -> World:
    configure_dicom_libraries()
    services = build_services(Settings(data_dir=data, auto_migrate=False))
    nid = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M",
                               rng=random.Random(9))
    for code in ("BH1", "BH2", "BH3"):
        services.hospitals.register(HospitalInput(
            code=code, name=f"示范医院{code[-1]}", level="tertiary", grade="A",
            national_id_source="patient_id"))
    work = data.parent / "incoming"
    work.mkdir(exist_ok=True)
    found: dict[str, tuple[str, str, list[tuple[float, str]]]] = {}
    for seed, code in enumerate(("BH1", "BH2")):
        items = []
        uids: list[tuple[float, str]] = []
        for ds in make_ct_series(slices, patient_id=nid, patient_name="Wang^XiaoDong",
                                 birth_date="19600102", sex="M", seed=seed + 1):
            ds.BodyPartExamined = "CHEST"
            path = work / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(to_bytes(ds))
            items.append(IngestItem(path))
            uids.append((float(ds.ImagePositionPatient[2]), str(ds.SOPInstanceUID)))
            found[code] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), uids)
        results = services.ingest.ingest_files(items, sender=Sender(code, code, "bench"))
        failed = [r for r in results if isinstance(r, Exception)]
        assert not failed, failed[:1]
    services.accounts.create_account(NewAccount(
        kind="doctor", username="dr.bench", password=PASSWORD, display_name="李医生",
        hospital_code="BH3", department="放射科"), by=LOCAL_OPERATOR)
    signed = services.accounts.sign_in_password("dr.bench", PASSWORD, requester="bench")
    actor = services.accounts.actor_for_token(signed.token)
    assert actor is not None
    grant = services.consent.in_person(
        actor, GrantRequest(purpose="treatment", national_id=nid),
        InPersonEvidence(id_card_number=nid, witness_name="护士张"))
    study, series, uids = found["BH1"]
    prior_study, prior_series, _ = found["BH2"]
    return World(signed.token, study, series, prior_study, prior_series, grant.id,
                 tuple(uid for _, uid in sorted(uids, reverse=True)))
