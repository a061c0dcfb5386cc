"""``cloudfilm demo`` makes two ready doctor accounts at the two hospitals of its
duplicate-exam example, so that `make run` shows the workstation with a patient who has
studies at both; a rerun keeps them."""

from __future__ import annotations

from datetime import datetime

from cloudfilm.cli.demo import DEMO_DOCTOR_PASSWORD, _doctor_accounts
from cloudfilm.demo.loader import register_hospitals
from cloudfilm.demo.province import build_province, recognition_examples
from cloudfilm.services.container import Services


def test_two_doctors_at_the_two_hospitals_of_a_shared_patient(services: Services) -> None:
    province = build_province("small", seed=2024, anchor=datetime(2026, 12, 1, 10))
    register_hospitals(services.hospitals, province)
    made = _doctor_accounts(services, province)
    assert [m[0] for m in made] == ["doctor.a", "doctor.b"]
    assert made[0][1] != made[1][1]
    recent, prior = recognition_examples(province)[0]
    assert {made[0][1], made[1][1]} == {recent.hospital.code, prior.hospital.code}
    assert made[0][3] == recent.resident.national_id == prior.resident.national_id
    for user, code, _name, _nid in made:
        signed = services.accounts.sign_in_password(user, DEMO_DOCTOR_PASSWORD,
                                                    requester="test")
        assert signed.actor.hospital_code == code and signed.actor.account_id is not None
    assert _doctor_accounts(services, province) == made  # a rerun
