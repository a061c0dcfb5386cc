"""Resident ID numbers: valid and invalid vectors (GB 11643-1999, ISO 7064 MOD 11-2)."""

from __future__ import annotations

import random
from datetime import date

import pytest

from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.national_id import NationalIdError


@pytest.mark.parametrize(
    ("number", "born", "sex"),
    [
        ("11010519491231002X", date(1949, 12, 31), "F"),  # the standard's own example
        ("440524188001010014", date(1880, 1, 1), "M"),  # the standard's second example
        ("11010519491231002x", date(1949, 12, 31), "F"),  # lower-case x is accepted
    ],
)
def test_valid_numbers(number: str, born: date, sex: str) -> None:
    parsed = national_id.parse(number)
    assert (parsed.birth_date, parsed.sex) == (born, sex)
    assert parsed.masked == parsed.number[:6] + "********" + parsed.number[-4:]


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("110105194912310021", "check character"),
        ("11010519491231002", "18 characters"),
        ("11010519491231002XX", "18 characters"),
        ("01010519491231002X", "non-zero area code"),
        ("110105194902300020", "does not exist"),
        ("110105209912310020", "future"),
        ("11010519491231A02X", "17 digits"),
    ],
)
def test_invalid_numbers_say_why(number: str, reason: str) -> None:
    with pytest.raises(NationalIdError, match=reason):
        national_id.parse(number)
    assert not national_id.is_valid(number)


def test_generated_numbers_are_valid_and_carry_sex_and_birth() -> None:
    rng = random.Random(7)
    for sex in ("M", "F"):
        number = national_id.generate(area_code="310101", birth_date=date(1950, 6, 1), sex=sex,
                                      rng=rng)
        parsed = national_id.parse(number)
        assert (parsed.sex, parsed.birth_date) == (sex, date(1950, 6, 1))
