"""Report pages: HTML (labels, escaping, banners, time zone, versions, age) and A4 PDF (text
layer, embedded CJK fonts, page numbers, metadata)."""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from cloudfilm.infrastructure.reports import render
from cloudfilm.infrastructure.reports.render import (
    ReportView,
    VersionLine,
    cjk_font_available,
    negotiate_language,
    render_html,
    render_pdf,
)

FINDINGS = "右肺上叶见一磨玻璃小结节，直径约5mm。\n双肺纹理清晰。"
NO_CJK_FONT = (
    "no Chinese font known to fontconfig (install fonts-noto-cjk; .ci/run does): "
    "the PDF would show boxes instead of Chinese"
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def make_view(**changes: Any) -> ReportView:
    view = ReportView(
        report_id="RPT-0001",
        title="CT 胸部平扫",
        status="final",
        version=2,
        versions=(
            VersionLine(1, "preliminary", utc(2024, 3, 1, 3, 0), utc(2024, 3, 1, 3, 5)),
            VersionLine(2, "final", utc(2024, 3, 1, 4, 0), utc(2024, 3, 1, 4, 5)),
        ),
        hospital_name="杭州市第一人民医院",
        patient_name="张三",
        patient_sex="M",
        patient_birth_date="19800615",
        patient_id="H-778899",
        study_date="20240301",
        exam_at=utc(2024, 3, 1, 2, 0),
        modality="CT",
        accession_number="ACC-42",
        study_description="胸部平扫",
        findings=FINDINGS,
        impression="右肺上叶小结节，建议6个月后复查。",
        author="李明",
        verifier="王芳",
        issued_at=utc(2024, 3, 1, 4, 0),
        received_at=utc(2024, 3, 1, 4, 5),
        source="fhir",
        linked=True,
    )
    return replace(view, **changes)


def squash(html: str) -> str:
    return " ".join(html.split())


def fact(html: str, label: str) -> str:
    """The <dd> after the <dt> with this label."""
    found = re.search(rf"<dt>{re.escape(label)}</dt><dd>(.*?)</dd>", html, re.S)
    assert found, f"no {label!r} field in the page"
    return found.group(1)


# -- HTML: languages ---------------------------------------------------------------------------


def test_zh_cn_labels_by_default() -> None:
    html = render_html(make_view())
    assert '<html lang="zh-CN">' in html
    for label in ("检查所见", "诊断意见", "报告医师", "审核医师", "检查时间", "报告时间", "状态"):
        assert f">{label}<" in html, label
    assert fact(html, "状态").startswith("正式报告")
    assert fact(html, "报告医师") == "李明"
    assert fact(html, "审核医师") == "王芳"
    assert "Findings" not in html


@pytest.mark.parametrize("lang", ["en", "en-US", "EN_gb"])
def test_english_labels(lang: str) -> None:
    html = render_html(make_view(status="amended"), lang=lang)
    assert '<html lang="en">' in html
    for label in ("Findings", "Impression", "Reporting physician", "Verified by", "Exam time"):
        assert f">{label}<" in html, label
    assert fact(html, "Status").startswith("Amended")
    assert "检查所见" not in html
    # The report's own text stays as the hospital wrote it.
    assert "右肺上叶" in html


@pytest.mark.parametrize("lang", ["zh", "zh-CN", "zh-TW", "fr", "", "xx-YY"])
def test_other_languages_fall_back_to_zh_cn(lang: str) -> None:
    html = render_html(make_view(), lang=lang)
    assert '<html lang="zh-CN">' in html
    assert ">检查所见<" in html


@pytest.mark.parametrize(
    ("header", "explicit", "expected"),
    [
        (None, None, "zh-CN"),
        ("", None, "zh-CN"),
        ("en-US,en;q=0.9", None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh-CN"),
        ("en;q=0.5, zh;q=0.8", None, "zh-CN"),  # q wins over order
        ("zh;q=0.4, en-GB;q=0.7", None, "en"),
        ("fr-FR, de;q=0.9, en;q=0.3", None, "en"),  # unsupported ones are skipped
        ("en, zh", None, "en"),  # equal q: header order
        ("en;q=0, zh;q=0", None, "zh-CN"),  # q=0 means "not this"
        ("zh;q=0, en;q=0.1", None, "en"),
        ("en;q=abc, zh;q=0.2", None, "zh-CN"),  # malformed q ignored
        ("de, *;q=0.5", None, "zh-CN"),
        ("en-US,en;q=0.9", "zh", "zh-CN"),  # explicit wins
        ("zh-CN", "en-GB", "en"),
        ("en", "fr", "en"),  # an unsupported explicit choice falls back to the header
        ("zh", "", "zh-CN"),
    ],
)
def test_negotiate_language(header: str | None, explicit: str | None, expected: str) -> None:
    assert negotiate_language(header, explicit) == expected


# -- HTML: content -----------------------------------------------------------------------------


def test_report_text_is_escaped() -> None:
    view = make_view(
        findings="<script>alert('x')</script> R & L",
        impression="<b>bold</b>",
        patient_name='"><img src=x onerror=alert(1)>',
        hospital_name="A&B 医院",
    )
    html = render_html(view)
    assert "<script" not in html  # also: the page carries no script of its own
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; R &amp; L" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<img" not in html
    assert "A&amp;B 医院" in html
    assert "A&B" not in html


def test_page_is_self_contained() -> None:
    html = render_html(make_view())
    # The only link is the empty icon that stops the browser asking for /favicon.ico.
    assert re.findall(r"<link[^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert " src=" not in html
    assert "http://" not in html and "https://" not in html
    assert '<meta name="viewport"' in html
    assert "<style>" in html


def test_font_stack() -> None:
    assert (
        'font-family: "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", '
        '"PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif;'
    ) in squash(render_html(make_view()))


@pytest.mark.parametrize(
    ("status", "lang", "banner"),
    [
        ("cancelled", "zh-CN", "本报告已作废"),
        ("amended", "zh-CN", "本报告已修订，以下为最新版本"),
        ("preliminary", "zh-CN", "初步报告，尚未审核"),
        ("cancelled", "en", "This report has been cancelled"),
        ("amended", "en", "This report has been amended; the latest version is shown below"),
        ("preliminary", "en", "Preliminary report, not yet verified"),
    ],
)
def test_status_banners(status: str, lang: str, banner: str) -> None:
    html = render_html(make_view(status=status), lang=lang)
    assert re.search(
        rf'<div class="banner banner-{status}"[^>]*>\s*<strong>{banner}</strong>', html
    )


def test_final_report_has_no_banner() -> None:
    html = render_html(make_view(status="final"))
    assert 'class="banner' not in html
    for text in ("本报告已作废", "本报告已修订", "初步报告，尚未审核"):
        assert text not in html


def test_status_labels() -> None:
    labels = {
        "preliminary": "初步报告",
        "final": "正式报告",
        "amended": "修订报告",
        "cancelled": "已作废",
    }
    for status, label in labels.items():
        assert fact(render_html(make_view(status=status)), "状态").startswith(label)


def test_times_are_shown_in_the_province_zone() -> None:
    html = render_html(make_view())
    assert fact(html, "检查时间") == "2024-03-01 10:00"  # 02:00 UTC
    assert fact(html, "报告时间") == "2024-03-01 12:00"  # 04:00 UTC
    assert "02:00" not in html


def test_times_follow_tz_and_other_offsets() -> None:
    html = render_html(make_view(), tz="UTC")
    assert fact(html, "检查时间") == "2024-03-01 02:00"
    tokyo = timezone(timedelta(hours=9))
    html = render_html(make_view(exam_at=datetime(2024, 3, 1, 11, 0, tzinfo=tokyo)))
    assert fact(html, "检查时间") == "2024-03-01 10:00"


def test_naive_times_are_taken_as_local() -> None:
    html = render_html(make_view(exam_at=datetime(2024, 3, 1, 8, 15)))
    assert fact(html, "检查时间") == "2024-03-01 08:15"


def test_exam_time_falls_back_to_study_date() -> None:
    html = render_html(make_view(exam_at=None, study_date="20240229"))
    assert fact(html, "检查时间") == "2024-02-29"


def test_version_table() -> None:
    versions = (
        VersionLine(3, "amended", utc(2024, 3, 3, 2, 0), utc(2024, 3, 3, 2, 1)),
        VersionLine(1, "preliminary", None, utc(2024, 3, 1, 1, 0)),
        VersionLine(2, "final", utc(2024, 3, 2, 2, 0), utc(2024, 3, 2, 2, 1)),
    )
    html = render_html(make_view(status="amended", version=3, versions=versions))
    rows = re.findall(
        r'<tr class="version( current)?"><td>(.*?)</td><td>(.*?)</td>'
        r"<td>(.*?)</td><td>(.*?)</td></tr>",
        html,
    )
    assert rows == [
        ("", "1", "初步报告", "—", "2024-03-01 09:00"),
        ("", "2", "正式报告", "2024-03-02 10:00", "2024-03-02 10:01"),
        (" current", "3（当前）", "修订报告", "2024-03-03 10:00", "2024-03-03 10:01"),
    ]
    assert ">版本记录<" in html


def test_version_table_in_english() -> None:
    html = render_html(make_view(), lang="en")
    assert "<th>Version</th><th>Status</th><th>Issued</th><th>Received</th>" in html
    assert "<td>2 (current)</td><td>Final</td>" in html


def test_line_breaks_are_kept() -> None:
    html = render_html(make_view(findings="第一行\r\n第二行\n\n第四行", impression="1. 甲\n2. 乙"))
    assert '<div class="prose findings">第一行\n第二行\n\n第四行</div>' in html
    assert '<div class="prose impression">1. 甲\n2. 乙</div>' in html
    assert "white-space: pre-wrap" in html


def test_patient_sex_and_birth_date() -> None:
    html = render_html(make_view(patient_sex="F"))
    assert fact(html, "性别") == "女"
    assert fact(html, "出生日期") == "1980-06-15"
    assert fact(html, "患者编号") == "H-778899"
    assert fact(render_html(make_view(patient_sex="M"), lang="en"), "Sex") == "Male"
    assert fact(render_html(make_view(patient_sex="")), "性别") == "—"


@pytest.mark.parametrize(
    ("birth", "exam_at", "zh", "en"),
    [
        ("19800615", utc(2024, 3, 1, 2), "43岁", "43 years"),
        ("19800301", utc(2024, 3, 1, 2), "44岁", "44 years"),  # birthday: one more
        ("19800302", utc(2024, 3, 1, 2), "43岁", "43 years"),
        ("20230301", utc(2024, 3, 1, 2), "1岁", "1 year"),
        ("20231115", utc(2024, 3, 1, 2), "3个月", "3 months"),
        ("20240120", utc(2024, 3, 1, 2), "1个月", "1 month"),
        ("20240220", utc(2024, 3, 1, 2), "10天", "10 days"),
        ("20200229", utc(2024, 2, 28, 2), "3岁", "3 years"),
        # 16:30 UTC on the 14th is already the 15th in Shanghai: the birthday.
        ("19800315", utc(2024, 3, 14, 16, 30), "44岁", "44 years"),
    ],
)
def test_age_at_exam(birth: str, exam_at: datetime, zh: str, en: str) -> None:
    view = make_view(patient_birth_date=birth, exam_at=exam_at)
    assert fact(render_html(view), "年龄") == zh
    assert fact(render_html(view, lang="en"), "Age") == en


def test_age_from_study_date_when_no_exam_time() -> None:
    view = make_view(patient_birth_date="19800615", exam_at=None, study_date="20240615")
    assert fact(render_html(view), "年龄") == "44岁"


@pytest.mark.parametrize("birth", ["", "1980", "19801340", "20250101"])
def test_no_age_when_unknown_or_impossible(birth: str) -> None:
    assert fact(render_html(make_view(patient_birth_date=birth)), "年龄") == "—"


def test_no_age_without_exam_date() -> None:
    view = make_view(exam_at=None, study_date="")
    assert fact(render_html(view), "年龄") == "—"


def test_links_when_given() -> None:
    html = render_html(
        make_view(),
        pdf_url="/reports/RPT-0001.pdf?lang=en&v=2",
        images_url="https://view.example/s?study=1.2.3",
    )
    assert '<a class="secondary" href="/reports/RPT-0001.pdf?lang=en&amp;v=2">下载 PDF</a>' in html
    assert '<a href="https://view.example/s?study=1.2.3">查看影像</a>' in html


def test_no_links_when_not_given() -> None:
    html = render_html(make_view())
    assert "<a " not in html
    assert "<nav" not in html


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x"])
def test_unsafe_link_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        render_html(make_view(), pdf_url=url)


def test_held_report_says_images_are_missing() -> None:
    assert "影像尚未到达" in render_html(make_view(linked=False))
    assert "影像尚未到达" not in render_html(make_view(linked=True))
    assert "have not arrived" in render_html(make_view(linked=False), lang="en")


def test_title_and_metadata_in_head() -> None:
    html = render_html(make_view())
    assert "<title>CT 胸部平扫 – 杭州市第一人民医院</title>" in html
    assert '<meta name="author" content="李明">' in html
    assert '<meta name="robots" content="noindex, nofollow">' in html


# -- PDF ---------------------------------------------------------------------------------------


def pdf_text(pdf: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def font_dicts(pdf: bytes) -> list[Any]:
    fonts = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        resources = page["/Resources"].get_object()
        for ref in resources.get("/Font", {}).get_object().values():
            fonts.append(ref.get_object())
    return fonts


@pytest.fixture(scope="module")
def pdf_zh() -> bytes:
    return render_pdf(make_view())


@pytest.fixture(scope="module")
def pdf_en() -> bytes:
    return render_pdf(make_view(), lang="en")


def test_pdf_is_a_pdf(pdf_zh: bytes) -> None:
    assert pdf_zh.startswith(b"%PDF-")
    assert pdf_zh.rstrip().endswith(b"%%EOF")


def test_pdf_has_the_chinese_text(pdf_zh: bytes) -> None:
    if not cjk_font_available():
        pytest.skip(NO_CJK_FONT)
    text = "".join(pdf_text(pdf_zh))
    # Extracting Chinese back needs the embedded fonts' ToUnicode maps.
    assert "右肺上叶见一磨玻璃小结节" in text
    assert "检查所见" in text and "诊断意见" in text
    assert "张三" in text


def test_pdf_in_english(pdf_en: bytes) -> None:
    text = "".join(pdf_text(pdf_en))
    for label in (
        "Findings",
        "Impression",
        "Reporting physician",
        "Verified by",
        "Version history",
        "2024-03-01 10:00",
    ):
        assert label in text, label
    assert "Findings" not in "".join(pdf_text(render_pdf(make_view())))


def test_pdf_fonts_are_embedded(pdf_zh: bytes) -> None:
    fonts = font_dicts(pdf_zh)
    assert fonts
    for font in fonts:
        descendant = (
            font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
        )
        descriptor = descendant["/FontDescriptor"].get_object()
        assert {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor), font["/BaseFont"]
        assert "/ToUnicode" in font, font["/BaseFont"]
    if not cjk_font_available():
        pytest.skip(NO_CJK_FONT)
    names = [str(font["/BaseFont"]) for font in fonts]
    assert any("CJK" in name or "Noto" in name for name in names), names


def test_pdf_metadata(pdf_zh: bytes) -> None:
    meta = PdfReader(io.BytesIO(pdf_zh)).metadata
    assert meta is not None
    assert meta.title == "CT 胸部平扫 – 杭州市第一人民医院"
    assert meta.author == "李明"
    assert meta.subject == "胸部平扫"


@pytest.mark.parametrize(
    ("lang", "pattern"),
    [("en", r"Page\s*{n}\s*of\s*{m}"), ("zh-CN", r"第\s*{n}\s*页\s*/\s*共\s*{m}\s*页")],
)
def test_long_pdf_has_page_numbers(lang: str, pattern: str) -> None:
    if lang == "zh-CN" and not cjk_font_available():
        pytest.skip(NO_CJK_FONT)
    findings = "\n".join(f"{n}. Segment {n}: no focal lesion, 未见异常。" for n in range(1, 121))
    pages = pdf_text(render_pdf(make_view(findings=findings), lang=lang))
    assert len(pages) >= 3
    for n, text in enumerate(pages, start=1):
        assert re.search(pattern.format(n=n, m=len(pages)), text), (n, text[-200:])
    # The hospital's name heads the following pages (the first shows it as the title).
    if lang == "zh-CN":
        assert all("杭州市第一人民医院" in text for text in pages[1:])


def test_pdf_of_cancelled_report() -> None:
    pdf = render_pdf(make_view(status="cancelled"), lang="en")
    text = "".join(pdf_text(pdf))
    assert "This report has been cancelled" in text
    assert "CANCELLED" in text  # the watermark


def test_render_pdf_without_a_cjk_font(tmp_path: Path) -> None:
    """No Chinese font (fontconfig sees only DejaVu): still a PDF, and the check says so."""
    dejavu = Path("/usr/share/fonts/truetype/dejavu")
    if not dejavu.is_dir():
        pytest.skip("DejaVu fonts are not installed: no Latin-only font set to test with")
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><fontconfig>'
        f"<dir>{dejavu}</dir><cachedir>{tmp_path / 'cache'}</cachedir></fontconfig>"
    )
    script = (
        "import pickle, sys\n"
        "from cloudfilm.infrastructure.reports.render import cjk_font_available, render_pdf\n"
        "pdf = render_pdf(pickle.load(sys.stdin.buffer), lang='en')\n"
        "print(cjk_font_available(), pdf[:5].decode(), len(pdf) > 1000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(make_view()),
        capture_output=True,
        timeout=120,
        check=False,
        env={"FONTCONFIG_FILE": str(conf), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert done.returncode == 0, done.stderr[-2000:].decode(errors="replace")
    assert done.stdout.split() == [b"False", b"%PDF-", b"True"]


# -- fonts check and laziness --------------------------------------------------------------------


def test_cjk_font_available_is_false_without_fc_list(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("fc-list")

    monkeypatch.setattr(render.subprocess, "run", missing)
    cjk_font_available.cache_clear()
    try:
        assert cjk_font_available() is False
    finally:
        cjk_font_available.cache_clear()


def test_cjk_font_available_matches_fc_list() -> None:
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except FileNotFoundError:
        listed = ""
    assert cjk_font_available() is bool(listed)


def test_weasyprint_is_imported_lazily() -> None:
    script = (
        "import pickle, sys\n"
        "from cloudfilm.infrastructure.reports.render import render_html\n"
        "render_html(pickle.load(sys.stdin.buffer))\n"
        "print('weasyprint' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(make_view()),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:].decode(errors="replace")
    assert done.stdout.strip() == b"False"
