"""The portal's words: every message of the templates and code has a Chinese translation,
plain study titles, language choice, and the Host/Origin helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from cloudfilm.interfaces.web import labels
from cloudfilm.interfaces.web.i18n import LOCALE_DIR, Languages, choose, load_translations
from cloudfilm.interfaces.web.portal import NO_ACCOUNT, NO_MATCH, PRESET_NAMES
from cloudfilm.interfaces.web.security import _hostname, csrf_matches

WEB = Path(labels.__file__).parent


def _messages() -> set[str]:
    found = set()
    method_map = [("**.py", "python"), ("templates/**.j2", "jinja2")]
    options = {"templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(WEB), method_map, options):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_message_has_a_chinese_translation() -> None:
    zh = load_translations("zh-CN")
    wanted = (_messages() | set(labels.BODY_PARTS.values()) | set(labels.MODALITIES.values())
              | set(labels.REPORT_STATUS.values()) | set(PRESET_NAMES.values())
              | {NO_ACCOUNT, NO_MATCH} | set(labels.ACTIONS.values())
              | set(labels.WHO.values()) | {labels.action('unknown')})
    assert len(wanted) > 60
    missing = sorted(m for m in wanted if m and zh.gettext(m) == m
                     and m not in ("CT", "MR", "PET"))
    assert missing == []
    assert (LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").exists()


def test_templates_render_in_both_languages_with_autoescape() -> None:
    langs = Languages()
    for lang in ("zh-CN", "en"):
        env = langs.envs[lang]
        assert env.autoescape is True
        out = env.from_string("{{ x }}").render(x="<script>")
        assert out == "&lt;script&gt;"
    assert langs.gettext("zh-CN", "Sign in") == "登录"
    assert langs.gettext("en", "Sign in") == "Sign in"


@pytest.mark.parametrize(("explicit", "cookie", "header", "expected"), [
    (None, None, None, "zh-CN"),
    (None, None, "en-US,en;q=0.9", "en"),
    (None, None, "fr-FR", "zh-CN"),
    (None, "en", "zh-CN", "en"),
    ("zh-CN", "en", "en", "zh-CN"),
    ("xx", None, "en", "en"),
])
def test_language_switch_then_cookie_then_browser(explicit: str | None, cookie: str | None,
                                                  header: str | None, expected: str) -> None:
    assert choose(explicit, cookie, header) == expected


@pytest.mark.parametrize(("modalities", "parts", "description", "zh", "en"), [
    (("CT",), ("CHEST",), "", "胸部CT", "Chest CT"),
    (("MR",), ("BRAIN",), "", "头颅MR", "Head MR"),
    (("DX",), (), "DX CHEST PA", "胸部X线", "Chest X-ray"),
    (("US", "SR"), ("ABDOMEN",), "", "腹部超声", "Abdomen Ultrasound"),
    (("CT",), (), "whatever", "CT", "CT"),
])
def test_study_titles_in_plain_words(modalities: tuple[str, ...], parts: tuple[str, ...],
                                     description: str, zh: str, en: str) -> None:
    langs = Languages()
    assert labels.study_title(langs.translations["zh-CN"].gettext, "zh-CN", modalities,
                              parts, description) == zh
    assert labels.study_title(langs.translations["en"].gettext, "en", modalities, parts,
                              description) == en


def test_names_dates_hosts_and_tokens() -> None:
    assert labels.person("Wang^XiaoDong=王^小东") == "王小东"
    assert labels.person("Zhao^Lei") == "Lei Zhao"
    assert labels.da_date("20240105", "zh-CN") == "2024年1月5日"
    assert labels.da_date("2024", "en") == "2024"
    assert _hostname("Example.org:8042") == "example.org"
    assert _hostname("[::1]:8042") == "::1"
    assert csrf_matches("abc", "abc") and not csrf_matches("abc", "abd")
    assert not csrf_matches("", "") and not csrf_matches(None, "x")
