"""Free-text de-identification for Chinese and English reports: rules plus a dictionary.

Rules catch what has a shape (resident ID numbers, phone numbers, dates, labelled names,
hospital names); the dictionary (names of the resident, doctors and hospitals, drawn from the
index by the caller) catches what has none. ``residual_risk`` re-scans the output with looser
patterns so that a leak is reported rather than silently shipped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]


def resident_id_valid(candidate: str) -> bool:
    """GB 11643-1999 check digit (ISO 7064 MOD 11-2) of an 18-character resident ID."""
    if not re.fullmatch(r"\d{17}[\dXx]", candidate):
        return False
    total = sum(int(d) * w for d, w in zip(candidate[:17], _WEIGHTS, strict=True))
    check = (12 - total % 11) % 11
    return candidate[17].upper() == ("X" if check == 10 else str(check))


_CJK = r"[\u4e00-\u9fff]"
# Order matters: longer digit shapes first so that a resident ID is not eaten as a phone.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("ID", re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")),
    ("ID", re.compile(r"(?<![\dA-Za-z])\d{15}(?!\d)")),
    ("PHONE", re.compile(r"(?:\+?86[- ]?)?(?<!\d)1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")),
    ("PHONE", re.compile(r"(?<!\d)(?:\(?0\d{2,3}\)?[- ]?)\d{7,8}(?!\d)")),
    ("PHONE", re.compile(r"(?i)\b(?:tel|phone|fax|mobile)[.:： ]*\+?[\d()\- ]{7,}")),
    ("DATE", re.compile(r"(?<!\d)(?:19|20)\d{2}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*[日号])?")),
    ("DATE", re.compile(r"(?<!\d)(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
                        r"(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?(?!\d)")),
    ("DATE", re.compile(r"(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)\d{2}"
                        r"(?!\d)")),
    ("DATE", re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")),
    ("DATE", re.compile(r"(?i)\b(?:\d{1,2}\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|"
                        r"dec)[a-z]*\.?\s+(?:\d{1,2},?\s+)?(?:19|20)\d{2}\b")),
    ("HOSPITAL", re.compile(_CJK + r"{2,20}?(?:人民医院|中医院|医院|卫生院|卫生服务中心|妇幼保健院|"
                            r"保健院|诊所|医学中心)")),
    ("HOSPITAL", re.compile(r"\b(?:[A-Z][a-z'&.-]+\s+){1,5}(?:Hospital|Clinic|Medical Center|"
                            r"Medical Centre|Health Centre|Health Center)\b")),
    # Labelled names: "患者：张三", "姓名:李四", "医师 王五", "Name: John Smith", "Dr. Smith".
    # Longer labels first: "审核医师：X" must not match as "审核" + the name "医师".
    ("NAME", re.compile(r"(?:报告医师|审核医师|主治医师|申请医师|报告人|审核人|联系人|患者|病人|"
                        r"姓名|病员|医师|医生|技师|审核|签名|家属)\s*[:：]?\s*(" + _CJK
                        + r"{2,4})")),
    ("NAME", re.compile(r"(?i)\b(?:name|patient|physician|doctor|radiologist|reported by|"
                        r"signed by|dictated by|referring)\s*[:：]\s*([A-Z][A-Za-z'-]+"
                        r"(?:[ ^]+[A-Z][A-Za-z'-]+){0,3})")),
    ("NAME", re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Prof)\.?\s+"
                        r"([A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?)")),
    ("ID", re.compile(r"(?i)(?:住院号|门诊号|病案号|检查号|影像号|登记号|ID|MRN|accession"
                      r"(?: number| no\.?)?)\s*[:：#]?\s*([A-Za-z]*\d[\w-]{3,})")),
]


@dataclass(frozen=True)
class TextDeidResult:
    text: str
    removed: Counter[str] = field(default_factory=Counter)


def _dictionary_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first so that "张三丰" is removed before "张三"; single characters would
    # shred ordinary words.
    usable = sorted({t.strip() for t in terms if len(t.strip()) >= 2}, key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join(re.escape(t) for t in usable), re.IGNORECASE)


def deidentify_text(text: str, dictionary: dict[str, str] | None = None) -> TextDeidResult:
    """Replace identifying spans with ``[CATEGORY]``.

    `dictionary` maps a known term (a name, a hospital name) to its category; dictionary
    terms go first so that a known name inside a label pattern is counted under its category.
    """
    removed: Counter[str] = Counter()
    out = text
    if dictionary:
        by_lower = {k.strip().lower(): v for k, v in dictionary.items()}
        pattern = _dictionary_pattern(dictionary)
        if pattern is not None:
            def sub_term(m: re.Match[str]) -> str:
                category = by_lower.get(m.group(0).lower(), "NAME")
                removed[category] += 1
                return f"[{category}]"
            out = pattern.sub(sub_term, out)
    for category, rule in _RULES:
        def sub_rule(m: re.Match[str], category: str = category) -> str:
            removed[category] += 1
            if m.groups() and m.group(1):
                start, end = m.span(1)
                whole = m.group(0)
                base = m.start(0)
                return whole[: start - base] + f"[{category}]" + whole[end - base:]
            return f"[{category}]"
        out = rule.sub(sub_rule, out)
    return TextDeidResult(out, removed)


_RESIDUAL: list[tuple[str, re.Pattern[str]]] = [
    ("long digit run", re.compile(r"\d{6,}")),
    ("phone-like", re.compile(r"\d{3,4}[- ]\d{4}")),
    ("year", re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")),
    ("name label", re.compile(r"(?:姓名|患者|医师|Name|Dr)\s*[:：.]?\s*(?!\[)[^\s\[]{2}")),
    # A short Chinese word alone after a colon is shaped like a name in a form field.
    ("name-shaped field", re.compile(r"[:：]\s*" + _CJK + r"{2,3}(?=\s|$)", re.MULTILINE)),
    # Case-sensitive so that the "[HOSPITAL]" placeholders do not count.
    ("hospital word", re.compile(r"医院|卫生院|Hospital|Clinic")),
]


def residual_risk(text: str, dictionary: dict[str, str] | None = None) -> list[str]:
    """Findings that suggest identifying text survived; empty means none were found."""
    findings = [f"{label}: {m.group(0)!r}" for label, rule in _RESIDUAL
                for m in rule.finditer(text)]
    if dictionary:
        pattern = _dictionary_pattern(dictionary)
        if pattern is not None:
            findings += [f"dictionary term: {m.group(0)!r}" for m in pattern.finditer(text)]
    return findings
