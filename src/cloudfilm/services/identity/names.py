"""Name search keys with pinyin, and the name comparison the MPI uses for conflicts.

Chinese users search a patient by characters (``王小东``) or by pinyin typed without tones
(``wangxiaodong``, ``wang``); a header often carries only the ideographic group. pypinyin
gives the reading of each character (most common reading for polyphones, which is what a
registration clerk types too).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cloudfilm.infrastructure.dicom import charset

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPLIT = re.compile(r"[\s=^\\,]+")


@lru_cache(maxsize=4096)
def search_keys(name: str) -> str:
    """``charset.name_search_keys`` plus pinyin keys of every ideographic component.

    Parameters
    ----------
    name
        A decoded PN value (``Wang^XiaoDong=王^小东=``) or a plain name (``王小东``).

    Returns
    -------
    str
        Space-separated upper-case keys, e.g. ``"王 小东 王小东 WANG XIAODONG WANGXIAODONG"``
        for ``"=王^小东"``; match whole components with ``LIKE '% KEY %'``.
    """
    keys = dict.fromkeys(charset.name_search_keys(name).split())
    normalised = unicodedata.normalize("NFKC", name)
    for value in normalised.split("\\"):
        for group in value.split("="):
            if not _HAN.search(group):
                continue
            components = [c for c in _SPLIT.split(group.replace("^", " ")) if c]
            readings = [_pinyin(c) for c in components]
            for reading in readings:
                keys.setdefault(reading, None)
            if len(readings) > 1 or (readings and len(components[0]) > 1):
                keys.setdefault("".join(readings), None)
            if len(components) == 1 and len(components[0]) >= 2:
                # "王小东" typed without a separator: surname (first character) and given name
                keys.setdefault(_pinyin(components[0][0]), None)
                keys.setdefault(_pinyin(components[0][1:]), None)
    return " ".join(k for k in keys if k)


def _pinyin(text: str) -> str:
    # Imported on first use: its phrase dictionary costs ~0.3-0.7 s of every start (issue 12).
    from pypinyin import Style, lazy_pinyin

    return "".join(lazy_pinyin(text, style=Style.NORMAL, errors="ignore")).upper()


def full_name_forms(name: str) -> set[str]:
    """Whole-name forms of a name (each group's components joined, ideographic groups also
    in pinyin): two names denote the same person's name when these sets intersect."""
    forms: set[str] = set()
    normalised = unicodedata.normalize("NFKC", name).upper()
    for group in normalised.split("\\", 1)[0].split("="):
        joined = "".join(c for c in _SPLIT.split(group.replace("^", " ")) if c)
        if not joined:
            continue
        forms.add(joined)
        if _HAN.search(joined):
            forms.add(_pinyin(joined))
    return forms


def _groups(name: str) -> tuple[set[str], set[str]]:
    """(ideographic, alphabetic) whole-name forms of a name, components joined."""
    ideographic: set[str] = set()
    alphabetic: set[str] = set()
    normalised = unicodedata.normalize("NFKC", name).upper()
    for group in normalised.split("\\", 1)[0].split("="):
        joined = "".join(c for c in _SPLIT.split(group.replace("^", " ")) if c)
        if joined:
            (ideographic if _HAN.search(joined) else alphabetic).add(joined)
    return ideographic, alphabetic


def has_name(name: str) -> bool:
    """Whether a name has any letters or characters at all (``^^`` has none)."""
    ideographic, alphabetic = _groups(name)
    return bool(ideographic or alphabetic)


def same_name(a: str, b: str) -> bool | None:
    """Whether two names are the same person's name; None when either is empty.

    The evidence rule for linking a record to a resident (issue 11): ideographic forms are
    compared as characters when both names have them (赵洋玲 is not 招扬灵, although both
    read ZHAOYANGLING); pinyin bridges only a name that has no ideographic group at all
    (many modalities write only ``Zhao^Yangling``). A caller must treat None as "no
    evidence", never as a match.
    """
    ia, aa = _groups(a)
    ib, ab = _groups(b)
    if not (ia or aa) or not (ib or ab):
        return None
    if ia and ib:
        return bool(ia & ib)
    if aa & ab:
        return True
    readings_a = {_pinyin(x) for x in ia} | aa
    readings_b = {_pinyin(x) for x in ib} | ab
    return bool(readings_a & readings_b)


def exact_name(recorded: str, typed: str) -> bool:
    """Registration's rule: the typed name is the recorded one exactly (characters for an
    ideographic name; letters for a name that has none). Pinyin is for search only."""
    ir, ar = _groups(recorded)
    it, at = _groups(typed)
    if ir:
        return bool(ir & it)
    return bool(ar and ar & at)
