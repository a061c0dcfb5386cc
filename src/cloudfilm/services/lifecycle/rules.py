"""When a study's retention ends: the rules as data, applied (pure functions, no I/O).

A rule matches a study when each criterion it sets matches (modality: any series of the
study; hospital: the producing hospital's code; kind: a case-insensitive part of the study
description). Without a matching rule the default applies (``storage.retention_years``, 30).
When several rules match, the longest end wins: a rule can be met but never cut short by
another. A rule with ``minor_age`` keeps the study of a patient younger than that at the
study at least until ``minor_age + minor_years`` (the birth date is needed; without it the
patient is not known to be a minor and the years from the study date apply).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    years: int
    modality: str = ""
    hospital_code: str = ""
    study_kind: str = ""
    minor_age: int | None = None
    minor_years: int = 0

    def matches(self, modalities: set[str], hospital_code: str, description: str) -> bool:
        if self.modality and self.modality.upper() not in modalities:
            return False
        if self.hospital_code and self.hospital_code != hospital_code:
            return False
        return not (self.study_kind
                    and self.study_kind.casefold() not in (description or "").casefold())


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a common year
        return day.replace(year=day.year + years, day=28)


def parse_da(value: str) -> date | None:
    """A DICOM DA (YYYYMMDD) or None when empty or malformed."""
    value = (value or "").strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def age_at(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def retention_end(rules: Iterable[Rule], default: Rule, *, study_day: date,
                  birth: date | None, modalities: set[str], hospital_code: str,
                  description: str) -> tuple[date, str]:
    """The day the study's retention ends, and the rule that decided it."""
    applicable = [r for r in rules if r.matches(modalities, hospital_code, description)]
    best: tuple[date, str] | None = None
    for rule in applicable or [default]:
        end = add_years(study_day, rule.years)
        if rule.minor_age is not None and birth is not None \
                and age_at(birth, study_day) < rule.minor_age:
            end = max(end, add_years(birth, rule.minor_age + rule.minor_years))
        if best is None or end > best[0]:
            best = (end, rule.name)
    assert best is not None
    return best
