"""A diagnostic report as a page: self-contained HTML for phones and browsers, A4 PDF for print.

One Jinja2 template (``templates/report.html.j2``, autoescaped) serves both: the HTML is
what a patient or doctor opens from a share link, the PDF is the same page laid out by
WeasyPrint with its ``@page`` rules (hospital name in the header, page numbers in the
footer). Labels are zh-CN first, en second. Times are shown in the province's time zone.

Chinese text in the PDF needs a CJK font on the machine (Debian: ``fonts-noto-cjk``);
without one WeasyPrint still renders, with boxes instead of characters, so the app should
warn at start-up when :func:`cjk_font_available` is False.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2

__all__ = [
    "ReportView",
    "VersionLine",
    "cjk_font_available",
    "negotiate_language",
    "render_html",
    "render_pdf",
]

DEFAULT_LANG = "zh-CN"
DEFAULT_TZ = "Asia/Shanghai"
LANGUAGES = ("zh-CN", "en")


@dataclass(frozen=True, slots=True)
class VersionLine:
    """One row of a report's version history."""

    version: int
    status: str
    issued_at: datetime | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ReportView:
    """Everything the page shows about one report (its current version).

    Text fields are plain text ("" when absent). Aware datetimes are converted to the
    display time zone; naive ones are taken as already local to the province (a hospital
    that leaves out the zone means its own, which is the province's).
    """

    report_id: str
    title: str
    status: str
    """preliminary / final / amended / cancelled."""
    version: int
    versions: tuple[VersionLine, ...]
    hospital_name: str
    patient_name: str
    patient_sex: str
    """M / F / O / ""."""
    patient_birth_date: str
    """YYYYMMDD or ""."""
    patient_id: str
    """The hospital's local patient id, may be ""."""
    study_date: str
    """YYYYMMDD or ""."""
    exam_at: datetime | None
    modality: str
    accession_number: str
    study_description: str
    findings: str
    impression: str
    author: str
    verifier: str
    issued_at: datetime | None
    received_at: datetime
    source: str
    """fhir / dicom-sr / dicom-pdf / hl7v2."""
    linked: bool
    """False while the report waits for its images ("held")."""


_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "doc_kind": "影像诊断报告",
        "patient": "患者信息",
        "name": "姓名",
        "sex": "性别",
        "age": "年龄",
        "birth_date": "出生日期",
        "patient_id": "患者编号",
        "accession": "检查号",
        "modality": "检查类型",
        "study": "检查项目",
        "exam_time": "检查时间",
        "report_time": "报告时间",
        "findings": "检查所见",
        "impression": "诊断意见",
        "author": "报告医师",
        "verifier": "审核医师",
        "status": "状态",
        "version": "版本",
        "versions": "版本记录",
        "issued": "签发时间",
        "received": "接收时间",
        "report_id": "报告编号",
        "source": "来源",
        "current": "（当前）",
        "pdf": "下载 PDF",
        "images": "查看影像",
        "banner_cancelled": "本报告已作废",
        "banner_cancelled_note": "内容仅供查阅，不能作为诊断依据。",
        "banner_amended": "本报告已修订，以下为最新版本",
        "banner_amended_note": "修订前的版本见文末版本记录。",
        "banner_preliminary": "初步报告，尚未审核",
        "banner_preliminary_note": "请以审核后的正式报告为准。",
        "held": "本报告的影像尚未到达，到达后即可查看。",
        "watermark": "已作废",
        "empty": "—",
        "colon": "：",
        # CSS string pieces around counter(page) / counter(pages) in the print footer.
        "page_before": "第 ",
        "page_middle": " 页 / 共 ",
        "page_after": " 页",
    },
    "en": {
        "doc_kind": "Imaging report",
        "patient": "Patient",
        "name": "Name",
        "sex": "Sex",
        "age": "Age",
        "birth_date": "Date of birth",
        "patient_id": "Patient ID",
        "accession": "Accession No.",
        "modality": "Modality",
        "study": "Examination",
        "exam_time": "Exam time",
        "report_time": "Report time",
        "findings": "Findings",
        "impression": "Impression",
        "author": "Reporting physician",
        "verifier": "Verified by",
        "status": "Status",
        "version": "Version",
        "versions": "Version history",
        "issued": "Issued",
        "received": "Received",
        "report_id": "Report ID",
        "source": "Source",
        "current": " (current)",
        "pdf": "Download PDF",
        "images": "View images",
        "banner_cancelled": "This report has been cancelled",
        "banner_cancelled_note": "Shown for reference only; it must not be used for diagnosis.",
        "banner_amended": "This report has been amended; the latest version is shown below",
        "banner_amended_note": "Earlier versions are listed in the version history.",
        "banner_preliminary": "Preliminary report, not yet verified",
        "banner_preliminary_note": "The verified final report prevails.",
        "held": "The images of this report have not arrived yet; they can be viewed once they do.",
        "watermark": "CANCELLED",
        "empty": "—",
        "colon": ": ",
        "page_before": "Page ",
        "page_middle": " of ",
        "page_after": "",
    },
}

_STATUS_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "preliminary": "初步报告",
        "final": "正式报告",
        "amended": "修订报告",
        "cancelled": "已作废",
    },
    "en": {
        "preliminary": "Preliminary",
        "final": "Final",
        "amended": "Amended",
        "cancelled": "Cancelled",
    },
}

_SEX_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {"M": "男", "F": "女", "O": "其他"},
    "en": {"M": "Male", "F": "Female", "O": "Other"},
}

_SOURCE_LABELS = {
    "fhir": "FHIR",
    "dicom-sr": "DICOM SR",
    "dicom-pdf": "DICOM PDF",
    "hl7v2": "HL7 v2",
}


# -- language ---------------------------------------------------------------------------------


def _supported(tag: str | None) -> str | None:
    """The supported language a BCP 47 tag falls under ("en-GB" -> "en"), else None."""
    primary = (tag or "").strip().replace("_", "-").split("-")[0].lower()
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def _normalize_lang(lang: str | None) -> str:
    return _supported(lang) or DEFAULT_LANG


def negotiate_language(accept_language: str | None, explicit: str | None) -> str:
    """Pick the page language: "zh-CN" or "en".

    Parameters
    ----------
    accept_language
        The request's ``Accept-Language`` header, e.g. ``"en-US,en;q=0.9,zh;q=0.8"``.
    explicit
        A language the user chose (query parameter, profile); it wins when it names a
        supported language.

    Returns
    -------
    str
        The supported language with the highest q-value (the header's order breaks ties;
        ``q=0`` means "not this one"), or "zh-CN" when nothing matches.
    """
    chosen = _supported(explicit)
    if chosen:
        return chosen
    best: tuple[float, str] | None = None
    for item in (accept_language or "").split(","):
        tag, _, params = item.partition(";")
        lang = _supported(tag)
        q = _q_value(params)
        # Strictly greater: on equal q the earlier entry stays, as the header ordered them.
        if lang and q > 0 and (best is None or q > best[0]):
            best = (q, lang)
    return best[1] if best else DEFAULT_LANG


def _q_value(params: str) -> float:
    """The q of one Accept-Language entry's parameters; 1 when absent, 0 when malformed."""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


# -- formatting -------------------------------------------------------------------------------


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    # Naive times are the sender's local time, which is the province's: shown as they are.
    return moment.astimezone(zone) if moment.tzinfo is not None else moment


def _format_time(moment: datetime | None, zone: ZoneInfo) -> str:
    return _local(moment, zone).strftime("%Y-%m-%d %H:%M") if moment is not None else ""


def _parse_da(value: str) -> date | None:
    """A DICOM DA (YYYYMMDD) as a date; None when empty or not a real date."""
    value = (value or "").strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _format_da(value: str) -> str:
    parsed = _parse_da(value)
    return parsed.isoformat() if parsed else (value or "").strip()


def _exam_date(view: ReportView, zone: ZoneInfo) -> date | None:
    """The day of the exam in the province: the exam time, else the study date."""
    if view.exam_at is not None:
        return _local(view.exam_at, zone).date()
    return _parse_da(view.study_date)


def _age(birth: date | None, on: date | None, lang: str) -> str:
    """Age on the exam day the way Chinese reports write it: years, or months under one
    year, or days under one month. "" when either date is unknown or birth comes later."""
    if birth is None or on is None or birth > on:
        return ""
    before_birthday = (on.month, on.day) < (birth.month, birth.day)
    years = on.year - birth.year - before_birthday
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    zh = lang == "zh-CN"
    if years >= 1:
        return f"{years}岁" if zh else f"{years} {'year' if years == 1 else 'years'}"
    if months >= 1:
        return f"{months}个月" if zh else f"{months} {'month' if months == 1 else 'months'}"
    days = (on - birth).days
    return f"{days}天" if zh else f"{days} {'day' if days == 1 else 'days'}"


def _text(value: str) -> str:
    # One newline convention, no blank lines around the text: the template shows it with
    # white-space: pre-wrap, so stray CR or leading newlines would show.
    return (value or "").replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def _safe_url(url: str | None) -> str | None:
    """The link target as given, refusing schemes a browser would execute (javascript:)."""
    if not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("", "http", "https"):
        raise ValueError(f"refusing report link with scheme {scheme!r}")
    return url


def _context(
    view: ReportView,
    lang: str,
    tz: str,
    pdf_url: str | None,
    images_url: str | None,
) -> dict[str, Any]:
    """The template's variables: every value already a display string."""
    zone = ZoneInfo(tz)
    labels = _LABELS[lang]
    status_labels = _STATUS_LABELS[lang]
    versions = [
        {
            "version": line.version,
            "status": status_labels.get(line.status, line.status),
            "issued": _format_time(line.issued_at, zone),
            "received": _format_time(line.received_at, zone),
            "current": line.version == view.version,
        }
        for line in sorted(view.versions, key=lambda line: line.version)
    ]
    exam_time = _format_time(view.exam_at, zone) or _format_da(view.study_date)
    created = view.issued_at or view.received_at
    return {
        "lang": lang,
        "t": labels,
        "v": view,
        "status_key": view.status,
        "status_label": status_labels.get(view.status, view.status),
        "sex": _SEX_LABELS[lang].get(view.patient_sex.strip().upper(), ""),
        "age": _age(_parse_da(view.patient_birth_date), _exam_date(view, zone), lang),
        "birth_date": _format_da(view.patient_birth_date),
        "exam_time": exam_time,
        "report_time": _format_time(view.issued_at, zone),
        "received_time": _format_time(view.received_at, zone),
        "created_iso": _local(created, zone).isoformat(timespec="seconds"),
        "source_label": _SOURCE_LABELS.get(view.source, view.source),
        "findings": _text(view.findings),
        "impression": _text(view.impression),
        "versions": versions,
        "pdf_url": _safe_url(pdf_url),
        "images_url": _safe_url(images_url),
        "doc_title": _doc_title(view, labels),
    }


def _doc_title(view: ReportView, labels: dict[str, str]) -> str:
    """Browser tab and PDF Title: what was examined, where. No patient name: tabs and file
    metadata travel further than the page does."""
    return " – ".join(
        part for part in (view.title or labels["doc_kind"], view.hospital_name) if part
    )


@functools.cache
def _environment() -> jinja2.Environment:
    # autoescape=True outright: select_autoescape would not match the ".html.j2" suffix.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cloudfilm.infrastructure.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# -- rendering --------------------------------------------------------------------------------


def render_html(
    view: ReportView,
    *,
    lang: str = DEFAULT_LANG,
    tz: str = DEFAULT_TZ,
    pdf_url: str | None = None,
    images_url: str | None = None,
) -> str:
    """The report as one self-contained HTML5 page (inline CSS, no scripts, no fetches).

    Parameters
    ----------
    view
        The report to show.
    lang
        "zh-CN"/"zh"/"en"/"en-US"...; anything not Chinese or English becomes "zh-CN".
    tz
        IANA zone the times are shown in (the province's).
    pdf_url, images_url
        Links to the report's PDF and to its images, shown when given (http(s) or
        relative; other schemes raise ``ValueError``).

    Returns
    -------
    str
        The page; every report field is HTML-escaped.

    Raises
    ------
    ValueError
        A link with a scheme other than http(s) (or relative).
    zoneinfo.ZoneInfoNotFoundError
        ``tz`` is not a known IANA zone.
    """
    return _page(view, lang, tz, pdf_url, images_url, paged=False)


def _page(
    view: ReportView,
    lang: str,
    tz: str,
    pdf_url: str | None,
    images_url: str | None,
    *,
    paged: bool,
) -> str:
    """The template rendered; ``paged`` leaves out the screen-only styles for WeasyPrint."""
    context = _context(view, _normalize_lang(lang), tz, pdf_url, images_url)
    context["paged"] = paged
    return _environment().get_template("report.html.j2").render(context)


def render_pdf(view: ReportView, *, lang: str = DEFAULT_LANG, tz: str = DEFAULT_TZ) -> bytes:
    """The report as an A4 PDF with its fonts embedded (subsets, with ToUnicode maps).

    Cost, measured on a developer machine: ~0.2 s per one-page report (layout, then
    subsetting the CJK fonts with HarfBuzz), ~1.1-1.5 s for the first call of a process
    (importing WeasyPrint, loading fonts): hence the lazy import, processes that never
    print never pay it. Without the system library ``libharfbuzz-subset`` WeasyPrint falls
    back to fontTools, which takes ~10 s per PDF on the 20 MB Noto CJK collections.

    Parameters
    ----------
    view
        The report to print.
    lang
        As for :func:`render_html`.
    tz
        IANA zone the times are shown in.

    Returns
    -------
    bytes
        The PDF document; title, author and subject are set in its metadata.
    """
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    page = _page(view, lang, tz, None, None, paged=True)
    # The page needs nothing from outside: a fetcher that allows no protocol keeps a
    # future template change (an <img>, a @font-face) from reaching the network or disk.
    fetcher = URLFetcher(allowed_protocols=())
    pdf = HTML(string=page, url_fetcher=fetcher).write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    return bytes(pdf)


@functools.cache
def cjk_font_available() -> bool:
    """Whether fontconfig knows a Chinese font, i.e. whether PDFs will show Chinese text
    instead of boxes. Asked once per process; False when ``fc-list`` is not installed."""
    try:
        found = subprocess.run(
            ["fc-list", ":lang=zh", "family"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return found.returncode == 0 and bool(found.stdout.strip())
