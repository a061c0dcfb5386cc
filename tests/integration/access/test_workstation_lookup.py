"""The doctor-scoped patient look-up of the workstation service: a doctor cannot enumerate
another hospital's patients (names, local IDs, guessed references), only a national ID
reaches beyond the own hospital, it is minimal, rate limited and audited."""

from __future__ import annotations

import pytest
from tests.integration.access.conftest import NID1, NID2, Province

from cloudfilm.services.access.otp import RateLimiter
from cloudfilm.services.access.workstation import WorkstationService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
)


def test_names_and_local_ids_stay_in_the_own_hospital(province: Province) -> None:
    ws = province.services.workstation
    doctor = province.doctor  # at HA: R1 has a record there, R2 only at HB
    assert ws.find_by_name(doctor, "Zhao") == [] and ws.find_by_name(doctor, "Lei") == []
    assert ws.find_by_local_id(doctor, NID2) == []  # HB's PatientID of R2
    [wang] = ws.find_by_name(doctor, "wang")
    assert wang.resident_id == province.r1 and wang.local_ids == (NID1,)
    assert not wang.masked
    with pytest.raises(InvalidInputError):
        ws.find_by_name(doctor, "W%")


def test_national_id_reaches_further_but_says_little(province: Province) -> None:
    ws = province.services.workstation
    [card] = ws.find(province.doctor, NID2)
    assert card.resident_id == province.r2 and card.masked and card.local_ids == ()
    assert card.elsewhere == 1 and "Zhao" not in card.name
    record = ws.open(province.doctor, card.ref)
    assert record.studies == [] and len(record.locked) == 1
    assert record.locked[0].hospital_name == "" and record.locked[0].hospital_level
    # The reference is this doctor's: another doctor, or a counted id, finds nothing.
    with pytest.raises(NotFoundError):
        ws.open(province.other_doctor, card.ref)
    with pytest.raises(NotFoundError):
        ws.open(province.doctor, f"r{province.r1}-" + card.ref.split("-")[1])
    # A grant opens the study and the name.
    province.grant(province.doctor, province.r2)
    granted = ws.open(province.doctor, card.ref)
    assert [s.study_instance_uid for s in granted.studies] == [province.sb2]
    assert not granted.card.masked


def test_only_doctors_and_lookups_are_limited(province: Province) -> None:
    svc = province.services
    for actor in (province.hospital("HA"), province.resident(province.r1)):
        with pytest.raises(NotAuthorizedError):
            svc.workstation.find(actor, NID1)
    tight = WorkstationService(svc.residents._db, svc.residents.protector, svc.policy,
                               svc.audit, RateLimiter(), lookups_per_hour=2)
    tight.find(province.doctor, NID1)
    tight.find(province.doctor, NID2)
    with pytest.raises(RateLimitedError):
        tight.find(province.doctor, NID1)
