"""PS3.15 Annex E Basic Application Level Confidentiality Profile, driven by Table E.1-1.

The table is data (``annex_e.json``, see ``generate.py`` for its source and edition); this
module only interprets the action codes (D, Z, X, K, C, U and their compounds) under the
options a project chose. Elements the table does not list are still checked by VR as a
safety net: person names go, unknown UIDs are re-mapped, dates follow the date option,
sequences are walked. Private elements go unless the project lists them as reviewed-safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from pydicom._uid_dict import UID_dictionary  # the registry of well-known UIDs
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag

from cloudfilm.infrastructure.deid.pseudonym import Pseudonymiser
from cloudfilm.infrastructure.deid.text import deidentify_text

_TABLE_PATH = Path(__file__).with_name("annex_e.json")


@dataclass(frozen=True)
class Region:
    """A rectangle of pixels to black out (columns x..x+width, rows y..y+height)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class DeidOptions:
    """The Annex E options a project chose (PS3.15 E.3); all off is the Basic Profile."""

    retain_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    retain_device_identity: bool = False
    retain_uids: bool = False
    retain_institution_identity: bool = False
    #: Width of age bands in years (0 keeps the exact age where patient characteristics are
    #: retained); ages of 90 and over collapse into one band.
    age_band_years: int = 0
    #: Reviewed private elements kept: (private creator, group, element low byte).
    safe_private: frozenset[tuple[str, int, int]] = frozenset()
    #: Per modality, regions to black out in objects that may carry burned-in text; an
    #: object at risk without regions for its modality is excluded.
    blackout_regions: Mapping[str, tuple[Region, ...]] = field(default_factory=dict)

    def option_columns(self) -> tuple[str, ...]:
        """Table E.1-1 columns in force, strongest retention first (K beats C)."""
        chosen = [
            ("rtnUIDsOpt", self.retain_uids),
            ("rtnDevIdOpt", self.retain_device_identity),
            ("rtnInstIdOpt", self.retain_institution_identity),
            ("rtnPatCharsOpt", self.retain_patient_characteristics),
            ("rtnLongModifDatesOpt", self.retain_modified_dates),
            ("cleanDescOpt", self.clean_descriptors),
            ("cleanStructContOpt", self.clean_structured_content),
            ("rtnSafePrivOpt", bool(self.safe_private)),
        ]
        return tuple(col for col, on in chosen if on)

    def method_codes(self) -> list[Any]:
        """CID 7050 codes for De-identification Method Code Sequence."""
        out = [codes.DCM.BasicApplicationConfidentialityProfile]
        pairs = [
            (self.retain_modified_dates,
             codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption),
            (self.retain_patient_characteristics, codes.DCM.RetainPatientCharacteristicsOption),
            (self.clean_descriptors, codes.DCM.CleanDescriptorsOption),
            (self.clean_structured_content, codes.DCM.CleanStructuredContentOption),
            (self.retain_device_identity, codes.DCM.RetainDeviceIdentityOption),
            (self.retain_uids, codes.DCM.RetainUidsOption),
            (self.retain_institution_identity, codes.DCM.RetainInstitutionIdentityOption),
            (bool(self.safe_private), codes.DCM.RetainSafePrivateOption),
        ]
        return out + [code for on, code in pairs if on]


class BurnedInDecision(StrEnum):
    NOT_AT_RISK = "not-at-risk"
    BLACKED_OUT = "blacked-out"
    EXCLUDED = "excluded"


@dataclass
class DeidResult:
    dataset: Dataset | None  # None when the object was excluded
    burned_in: BurnedInDecision
    reason: str
    pseudo_patient_id: str


@dataclass(frozen=True)
class Rule:
    basic: str
    options: Mapping[str, str]


@dataclass(frozen=True)
class Table:
    edition: str
    exact: Mapping[int, Rule]
    #: Repeating-group rows such as (50xx,xxxx) and (60xx,3000): (mask, value, rule).
    masked: tuple[tuple[int, int, Rule], ...]


@cache
def annex_e_table() -> Table:
    data = json.loads(_TABLE_PATH.read_text())
    exact: dict[int, Rule] = {}
    masked: list[tuple[int, int, Rule]] = []
    for tag, _name, basic, options in data["rows"]:
        rule = Rule(basic, options)
        if not all(c in "0123456789ABCDEFX" for c in tag):
            continue  # the "(gggg,eeee) where gggg is odd" row: private elements, see below
        if "X" in tag:
            mask = int("".join("0" if c == "X" else "F" for c in tag), 16)
            masked.append((mask, int(tag.replace("X", "0"), 16), rule))
        else:
            exact[int(tag, 16)] = rule
    return Table(data["edition"], exact, tuple(masked))


def _lookup(table: Table, tag: int) -> Rule | None:
    rule = table.exact.get(tag)
    if rule is not None:
        return rule
    for mask, value, masked_rule in table.masked:
        if tag & mask == value:
            return masked_rule
    return None


def _resolve(rule: Rule, columns: tuple[str, ...]) -> str:
    actions = {rule.options[c] for c in columns if c in rule.options}
    if "K" in actions:
        return "K"
    if "C" in actions:
        return "C"
    basic = rule.basic
    if basic == "X/Z/U*":
        return "U*"
    # For the compounds, keep the element (with a dummy or empty value) rather than remove
    # it: the object stays valid for its IOD and the value is gone either way.
    if "D" in basic:
        return "D"
    if "Z" in basic:
        return "Z"
    return basic[0]


_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_PATIENT_AGE = 0x00101010
_CONTENT_SEQUENCE = 0x0040A730
_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"}
_MAX_LEN = {"SH": 16, "AE": 16, "CS": 16, "LO": 64}


class _Cleaner:
    def __init__(self, options: DeidOptions, pseudo: Pseudonymiser, patient_key: str,
                 dictionary: dict[str, str] | None) -> None:
        self.options = options
        self.pseudo = pseudo
        self.columns = options.option_columns()
        self.table = annex_e_table()
        self.shift = pseudo.date_shift(patient_key)
        self.pid = pseudo.patient_id(patient_key)
        self.dictionary = dictionary or {}
        self.structured = 0

    # -- value helpers -------------------------------------------------------------------
    def _map(self, elem: DataElement, fn: Callable[[str], str]) -> None:
        if elem.VM == 0 or elem.value is None:
            return
        if elem.VM > 1:
            elem.value = [fn(str(v)) for v in elem.value]
        else:
            elem.value = fn(str(elem.value))

    def _shift_date(self, value: str) -> str:
        try:
            return (datetime.strptime(value[:8], "%Y%m%d").date() + self.shift).strftime("%Y%m%d")
        except ValueError:
            return ""

    def _shift_datetime(self, value: str) -> str:
        if len(value) < 8:
            return ""
        shifted = self._shift_date(value[:8])
        return shifted + value[8:] if shifted else ""

    def _band_age(self, value: str) -> str:
        if not value or value[-1] != "Y" or not value[:-1].isdigit():
            return "" if self.options.age_band_years else value
        years = int(value[:-1])
        width = self.options.age_band_years
        if width <= 0:
            return value
        low = 90 if years >= 90 else years - years % width
        return f"{low:03d}Y"

    def _clean_text(self, value: str, vr: str) -> str:
        cleaned = deidentify_text(value, self.dictionary).text
        limit = _MAX_LEN.get(vr)
        return cleaned[:limit] if limit else cleaned

    def _dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        tag = int(elem.tag)
        if tag in (_PATIENT_ID, _PATIENT_NAME):
            elem.value = self.pid
        elif vr == "UI":
            self._map(elem, self.pseudo.uid)
        elif vr == "DA":
            elem.value = (date(1900, 1, 1)).strftime("%Y%m%d")
        elif vr == "DT":
            elem.value = "19000101000000"
        elif vr == "TM":
            elem.value = "000000"
        elif vr == "PN":
            elem.value = "ANONYMOUS"
        elif vr in ("IS", "DS"):
            elem.value = "0"
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            elem.value = 0
        elif vr in _TEXT_VRS or vr == "UR":
            limit = _MAX_LEN.get(vr, 16)
            elem.value = self.pseudo.token(f"{tag:08X}", str(elem.value), min(limit, 16))
        elif vr == "AS":
            elem.value = "000Y"
        else:
            elem.value = None

    def _clean(self, elem: DataElement) -> None:
        vr = elem.VR
        tag = int(elem.tag)
        if vr in ("DA", "DT", "TM"):
            if not self.options.retain_modified_dates:
                self._dummy(elem)
            elif vr == "DA":
                self._map(elem, self._shift_date)
            elif vr == "DT":
                self._map(elem, self._shift_datetime)
            # Times of day stay: the shift moves whole days.
        elif tag == _PATIENT_AGE:
            self._map(elem, self._band_age)
        elif vr in ("LO", "SH", "ST", "LT", "UT", "UC"):
            self._map(elem, lambda v: self._clean_text(v, vr))
        elif vr == "PN":
            elem.value = "ANONYMOUS"

    # -- walk ----------------------------------------------------------------------------
    def dataset(self, ds: Dataset) -> None:
        kept_private_blocks: set[tuple[int, int]] = set()
        for tag in list(ds.keys()):
            elem = ds[tag]
            t = int(tag)
            if BaseTag(t).is_private:
                if BaseTag(t).is_private_creator:
                    continue
                if self._safe_private(ds, BaseTag(t)):
                    kept_private_blocks.add((BaseTag(t).group, (t >> 8) & 0xFF))
                    continue
                del ds[tag]
                continue
            if t >> 16 == 0x0002 or t == 0x7FE00010:
                continue
            rule = _lookup(self.table, t)
            if rule is None:
                self._unlisted(ds, elem)
                continue
            action = _resolve(rule, self.columns)
            if t == _PATIENT_AGE and action == "K":
                action = "C"  # retained, but in bands when the project asks for them
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = [] if vr_is_sq(elem) else (
                    self.pid if t in (_PATIENT_ID, _PATIENT_NAME) else None)
            elif action == "K":
                if vr_is_sq(elem) or elem.VR == "UI":
                    self._unlisted(ds, elem)
            elif vr_is_sq(elem):  # D, C, U* on a sequence: walk it with the same rules
                self._walk(elem)
            elif action == "D":
                self._dummy(elem)
            elif action == "U":
                if elem.VR == "UI" or elem.VR == "UN":
                    self._map(elem, self.pseudo.uid)
                else:
                    self._dummy(elem)
            elif action == "C":
                self._clean(elem)
        # Private creator elements go unless one of their blocks was kept.
        for tag in list(ds.keys()):
            bt = BaseTag(int(tag))
            if bt.is_private_creator and (bt.group, bt.element) not in kept_private_blocks:
                del ds[tag]

    def _safe_private(self, ds: Dataset, tag: BaseTag) -> bool:
        if not self.options.safe_private:
            return False
        creator_tag = (tag.group << 16) | ((tag.element >> 8) & 0xFF)
        creator = ds.get(creator_tag)
        if creator is None:
            return False
        return (str(creator.value).strip(), tag.group, tag.element & 0xFF) in \
            self.options.safe_private

    def _walk(self, elem: DataElement) -> None:
        # Inside structured content (SR Content Sequence) free text is report text: it is
        # cleaned whichever options are chosen (the Basic Profile would replace the whole
        # sequence; the text cleaner keeps the findings).
        structured = int(elem.tag) == _CONTENT_SEQUENCE
        self.structured += structured
        try:
            for item in elem.value:
                self.dataset(item)
        finally:
            self.structured -= structured

    def _unlisted(self, ds: Dataset, elem: DataElement) -> None:
        """Safety net for elements Table E.1-1 does not list."""
        vr = elem.VR
        if vr_is_sq(elem):
            self._walk(elem)
        elif vr == "PN":
            del ds[elem.tag]
        elif vr in ("DA", "DT"):
            if self.options.retain_modified_dates:
                self._clean(elem)
            else:
                self._dummy(elem)
        elif vr == "UI" and not self.options.retain_uids:
            self._map(elem, lambda v: v if v in UID_dictionary else self.pseudo.uid(v))
        elif self.structured and vr in ("UT", "ST", "LT"):
            self._map(elem, lambda v: self._clean_text(v, vr))


def vr_is_sq(elem: DataElement) -> bool:
    return elem.VR == "SQ"


def burned_in_risk(ds: Dataset) -> str | None:
    """Why an object may carry burned-in identifying text, or None."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    modality = str(ds.get("Modality", "")).strip().upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    if modality in {"US", "SC", "OT", "XC", "ES", "DOC"}:
        return f"modality {modality} usually carries burned-in text"
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "secondary capture usually carries burned-in text"
    if modality in {"DX", "CR", "XA", "RF"}:
        return f"{modality} without BurnedInAnnotation NO may carry burned-in markers"
    return None


def _black_out(ds: Dataset, regions: tuple[Region, ...]) -> None:
    if ds.file_meta.get("TransferSyntaxUID") is not None and \
            ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    arr = ds.pixel_array.copy()
    multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
    for r in regions:
        if multi:
            arr[:, r.y:r.y + r.height, r.x:r.x + r.width] = 0
        else:
            arr[r.y:r.y + r.height, r.x:r.x + r.width] = 0
    ds.PixelData = arr.tobytes()
    ds.BurnedInAnnotation = "NO"


_SWEPT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "PN", "AE", "UR"}


def _known_identifiers(ds: Dataset) -> list[str]:
    """The patient's own name and ids, to hunt for wherever else a modality copied them."""
    values: set[str] = set()
    for kw in ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber",
               "PatientBirthName", "PatientMotherBirthName"):
        elem = ds.get(kw)
        if elem is None:
            continue
        for v in (elem if isinstance(elem, list | tuple) else [elem]):
            text = str(v).strip()
            values.add(text)
            values.update(part.strip() for part in text.split("^"))
    return sorted((v for v in values if len(v) >= 3), key=len, reverse=True)


def _sweep(ds: Dataset, known: list[str], replacement: str) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _sweep(item, known, replacement)
        elif elem.VR in _SWEPT_VRS and elem.value is not None and not elem.tag.is_private:
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            changed = False
            for i, v in enumerate(values):
                text = str(v)
                for k in known:
                    if k in text:
                        text = text.replace(k, replacement)
                if text != str(v):
                    values[i], changed = text, True
            if changed:
                elem.value = values if elem.VM > 1 else values[0]


def deidentify(ds: Dataset, options: DeidOptions, pseudo: Pseudonymiser, *,
               patient_key: str | None = None,
               dictionary: dict[str, str] | None = None) -> DeidResult:
    """De-identify `ds` in place (pass a copy to keep the original).

    `patient_key` is what the per-patient date shift and pseudonym derive from (the
    platform's resident id where known; the object's Patient ID otherwise). `dictionary`
    lists known names to scrub from cleaned text (term -> category).
    """
    key = patient_key if patient_key is not None else str(ds.get("PatientID", ""))
    pid = pseudo.patient_id(key)
    risk = burned_in_risk(ds)
    decision = BurnedInDecision.NOT_AT_RISK
    if risk is not None:
        regions = options.blackout_regions.get(str(ds.get("Modality", "")).upper())
        if not regions:
            return DeidResult(None, BurnedInDecision.EXCLUDED, risk, pid)
        _black_out(ds, regions)
        decision = BurnedInDecision.BLACKED_OUT
    known = _known_identifiers(ds)
    cleaner = _Cleaner(options, pseudo, key, dictionary)
    cleaner.dataset(ds)
    if known:
        _sweep(ds, known, pid)
    if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if getattr(ds, "file_meta", None) is not None:
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                   "ReceivingApplicationEntityTitle", "PrivateInformation",
                   "PrivateInformationCreatorUID"):
            if kw in ds.file_meta:
                delattr(ds.file_meta, kw)
    ds.PatientID = pid
    ds.PatientName = pid
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED" if options.retain_modified_dates else "REMOVED")
    ds.DeidentificationMethod = "PS3.15 Annex E, Table E.1-1 as data (cloudfilm)"
    seq = Sequence()
    for code in options.method_codes():
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    return DeidResult(ds, decision, risk or "", pid)

