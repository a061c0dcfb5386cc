"""PDF text extraction of report objects has a time limit (issue 11, "bounded work")."""

from __future__ import annotations

import io
import time

from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject
from tests.factories import _render_pdf

from cloudfilm.infrastructure.reports import dicom


def _slow_pdf(operators: int) -> bytes:
    """One page whose content stream shows ``operators`` strings: pypdf needs ~4.5 s for
    100,000 of them here (1.4 MB), so a 25 MB report would take over a minute."""
    writer = PdfWriter()
    page = writer.add_blank_page(200, 200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
        {NameObject("/F1"): writer._add_object(font)})})
    stream = StreamObject()
    stream.set_data(b"BT /F1 12 Tf " + b"(a) Tj 1 0 Td " * operators + b"ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_ordinary_pdf_text_is_extracted() -> None:
    warnings: list[str] = []
    text, pages = dicom._pdf_text(_render_pdf("Report", "Findings: normal chest."), warnings)
    assert "normal chest" in text and pages == 1 and warnings == []


def test_slow_pdf_extraction_is_stopped_at_the_limit() -> None:
    dicom._pdf_text(_render_pdf("warm", "up"), [])  # start the fork server first
    warnings: list[str] = []
    started = time.perf_counter()
    text, pages = dicom._pdf_text(_slow_pdf(100_000), warnings, timeout=0.5)
    elapsed = time.perf_counter() - started
    assert (text, pages) == ("", None)
    assert any("longer than 0.5 s" in w for w in warnings), warnings
    assert elapsed < 2.5, f"extraction ran {elapsed:.1f} s past a 0.5 s limit"


def test_garbage_pdf_is_a_warning_not_an_error() -> None:
    warnings: list[str] = []
    assert dicom._pdf_text(b"%PDF-1.7\n" + bytes(1000), warnings) == ("", None)
    assert warnings
