"""Resident identity card numbers (GB 11643-1999): structure, birth date, check character.

An 18-character number is: 6-digit administrative area code, birth date YYYYMMDD, 3-digit
sequence (odd for men, even for women) and a check character from ISO 7064 MOD 11-2
(``0``-``9`` or ``X``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^[1-9]\d{5}(18|19|20)\d{2}\d{2}\d{2}\d{3}[\dX]$")


class NationalIdError(ValueError):
    """The number is not a valid resident identity card number; the message says why."""


@dataclass(frozen=True, slots=True)
class NationalId:
    number: str
    area_code: str
    birth_date: date
    sex: str  # "M" or "F", as DICOM PatientSex

    @property
    def masked(self) -> str:
        """First 6 and last 4 characters shown, the rest hidden."""
        return self.number[:6] + "*" * 8 + self.number[-4:]


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise NationalIdError("the first 17 characters must be digits")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def parse(number: str, *, today: date | None = None) -> NationalId:
    """Validate ``number`` and return its parts.

    Raises
    ------
    NationalIdError
        Wrong length or characters, impossible or future birth date, wrong check character.
    """
    value = number.strip().upper()
    if len(value) != 18:
        raise NationalIdError(f"a resident ID number has 18 characters, this one has {len(value)}")
    if not _SHAPE.match(value):
        raise NationalIdError(
            "a resident ID number is 17 digits and a final digit or X, starting with a "
            "non-zero area code and a birth year 1800-2099"
        )
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise NationalIdError(f"the birth date {value[6:14]} does not exist") from None
    if born > (today or date.today()):
        raise NationalIdError(f"the birth date {value[6:14]} is in the future")
    expected = check_character(value[:17])
    if value[17] != expected:
        raise NationalIdError("the check character does not match: the number is mistyped")
    sex = "M" if int(value[16]) % 2 == 1 else "F"
    return NationalId(number=value, area_code=value[:6], birth_date=born, sex=sex)


def is_valid(number: str) -> bool:
    try:
        parse(number)
    except NationalIdError:
        return False
    return True


def generate(*, area_code: str, birth_date: date, sex: str, rng: random.Random) -> str:
    """A valid synthetic number (for the demo and tests)."""
    sequence = rng.randrange(0, 500) * 2 + (1 if sex == "M" else 0)
    first17 = f"{area_code}{birth_date:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)
