"""Normalisation of what a study says about itself into (modality, body region, technique).

Pure functions over a :class:`Terms` table (loaded from ``recognition_term``). Rules:

- Text is compared in NFKC form (full-width letters and digits become ASCII), upper case,
  with runs of white space collapsed: ``胸部``, ``Chest``, ``ＣＨＥＳＴ`` and ``CHEST`` meet.
- ``BodyPartExamined`` (PS3.3 C.7.3.1, a defined term list) and modality are looked up
  *exactly*; free text (StudyDescription, the code meanings of ProcedureCodeSequence) by
  *contains*, longest pattern wins (``胸椎`` is the thoracic spine, not the chest).
- A coded procedure (``scheme:code`` of ProcedureCodeSequence) mapped in the table names
  the item directly and wins over everything else.
- Two different answers (a chest and an abdomen series; "胸腹部") are *ambiguous*: no item,
  and the value is listed for an administrator. Nothing is ever guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Field = Literal["body_part", "description", "procedure_code", "modality", "technique"]
FIELDS: tuple[str, ...] = ("body_part", "description", "procedure_code", "modality",
                           "technique")
# Objects that are not the exam itself (reports, presentation states, key images).
NON_IMAGING = frozenset({"SR", "PR", "KO", "DOC", "OT", "REG", "SEG", "RWV", "AU", "ECG"})
_SPACE = re.compile(r"[\s_\-]+")


def normalise_text(value: str) -> str:
    """NFKC, upper case, ``_`` and ``-`` as spaces (``L_SPINE``, ``L-SPINE``), single spaces,
    no surrounding space or punctuation."""
    text = unicodedata.normalize("NFKC", value or "").upper()
    return _SPACE.sub(" ", text).strip(" .,;:-_/\\^")


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    pattern: str
    value: str
    match: str = "exact"  # exact / contains


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A value an administrator should map: ``problem`` is unmapped or ambiguous."""

    field: str
    value: str
    problem: str


@dataclass(frozen=True, slots=True)
class Classification:
    modality: str
    body_region: str
    technique: str
    item_code: str
    """Set only when a procedure code named the item directly; else the catalogue decides."""
    unmapped: tuple[Unmapped, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What a study says: series modalities and body parts, its description, and the
    ProcedureCodeSequence items as (scheme, code, meaning)."""

    modalities: Sequence[str]
    body_parts: Sequence[str]
    description: str
    procedure_codes: Sequence[tuple[str, str, str]] = ()


class Terms:
    """The normalisation table, indexed for look-ups."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self._exact: dict[tuple[str, str], str] = {}
        self._contains: dict[str, list[tuple[str, str]]] = {}
        for t in terms:
            pattern = normalise_text(t.pattern)
            if not pattern:
                continue
            if t.match == "contains":
                self._contains.setdefault(t.field, []).append((pattern, t.value))
            else:
                self._exact[(t.field, pattern)] = t.value
        for entries in self._contains.values():
            entries.sort(key=lambda e: -len(e[0]))

    def exact(self, field_name: str, value: str) -> str | None:
        return self._exact.get((field_name, normalise_text(value)))

    def contains(self, field_name: str, text: str) -> set[str]:
        """Values of the longest patterns found in ``text`` (a pattern inside a longer
        matched one does not count)."""
        text = normalise_text(text)
        kept: list[str] = []
        values: set[str] = set()
        for pattern, value in self._contains.get(field_name, ()):
            if pattern in text and not any(pattern in k for k in kept):
                kept.append(pattern)
                values.add(value)
        return values


def classify(facts: StudyFacts, terms: Terms) -> Classification:
    """Normalise one study; every value that could not be mapped is in ``unmapped``."""
    unmapped: list[Unmapped] = []
    # Modality: each imaging series' modality, exactly.
    modalities: set[str] = set()
    for raw in facts.modalities:
        value = normalise_text(raw)
        if not value or value in NON_IMAGING:
            continue
        mapped = terms.exact("modality", value)
        if mapped is None:
            unmapped.append(Unmapped("modality", value, "unmapped"))
        else:
            modalities.add(mapped)
    modality = ""
    if unmapped:  # e.g. PET/CT: its CT series alone is not a diagnostic CT
        pass
    elif len(modalities) == 1:
        modality = next(iter(modalities))
    elif len(modalities) > 1:
        unmapped.append(Unmapped("modality", "/".join(sorted(modalities)), "ambiguous"))
    # A mapped procedure code names the item itself.
    item_code = ""
    meanings: list[str] = []
    for scheme, code, meaning in facts.procedure_codes:
        if meaning:
            meanings.append(meaning)
        if code:
            mapped = terms.exact("procedure_code", f"{scheme}:{code}")
            if mapped is not None and not item_code:
                item_code = mapped
    # Body region: coded BodyPartExamined first, then free text.
    regions: set[str] = set()
    for raw in facts.body_parts:
        value = normalise_text(raw)
        if not value:
            continue
        mapped = terms.exact("body_part", value)
        if mapped is None:
            unmapped.append(Unmapped("body_part", value, "unmapped"))
        else:
            regions.add(mapped)
    texts = [t for t in (facts.description, *meanings) if normalise_text(t)]
    if not regions:
        for text in texts:
            regions |= terms.contains("description", text)
    region = ""
    if len(regions) == 1:
        region = next(iter(regions))
    elif len(regions) > 1:
        source = normalise_text(facts.description) or "/".join(sorted(regions))
        unmapped.append(Unmapped("description", source[:256], "ambiguous"))
    elif not item_code:
        for text in texts:
            unmapped.append(Unmapped("description", normalise_text(text)[:256], "unmapped"))
        for scheme, code, _ in facts.procedure_codes:
            if code:
                unmapped.append(Unmapped("procedure_code", f"{scheme}:{code}"[:256],
                                         "unmapped"))
    techniques: set[str] = set()
    for text in texts:
        techniques |= terms.contains("technique", text)
    # A contrast study includes its plain phase: contrast wins over plain.
    technique = "contrast" if "contrast" in techniques else "plain"
    return Classification(modality, region, technique, item_code,
                          tuple(dict.fromkeys(unmapped)))
