"""Languages of the pages: gettext catalogues (Babel ``.po`` files in ``locale/``), one
Jinja2 environment per language.

Message ids are English; ``locale/zh_CN/LC_MESSAGES/*.po`` hold the Chinese, one file per
group of pages (``messages.po`` for the portal, ``workstation.po``, ``dashboard.po`` ...), so
that work on one page group never edits another's catalogue; they are merged into one.
The ``.po`` files are compiled in memory when the app starts (Babel's ``write_mo``), so
there is no compiled ``.mo`` to forget to rebuild or commit. Update after changing texts
(per file, with ``-D <name>`` and the templates of that group)::

    .venv/bin/pybabel extract -F src/cloudfilm/interfaces/web/babel.cfg \\
        -o /tmp/messages.pot src/cloudfilm/interfaces/web
    .venv/bin/pybabel update -i /tmp/messages.pot -d src/cloudfilm/interfaces/web/locale

The language: an explicit switch (``?lang=``, remembered in a cookie), then the browser's
``Accept-Language``; Chinese when neither says otherwise.
"""

from __future__ import annotations

import gettext
import io
from pathlib import Path

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from cloudfilm.infrastructure.reports.render import negotiate_language

LOCALE_DIR = Path(__file__).parent / "locale"
TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = ("zh-CN", "en")
DEFAULT = "zh-CN"
LANG_COOKIE = "cloudfilm_lang"


def load_translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang`` (English is the message ids themselves)."""
    if lang == "en":
        return gettext.NullTranslations()
    folder = lang.replace("-", "_")
    catalog = None
    for path in sorted((LOCALE_DIR / folder / "LC_MESSAGES").glob("*.po")):
        with open(path, "rb") as fh:
            part = read_po(fh, locale=folder)
        if catalog is None:
            catalog = part
            continue
        for message in part:
            if message.id and message.id not in catalog:
                catalog[message.id] = message
    assert catalog is not None, f"no catalogue for {lang}"
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class Languages:
    """Translations and a template environment for each supported language."""

    def __init__(self) -> None:
        self.translations = {lang: load_translations(lang) for lang in LANGUAGES}
        self.envs: dict[str, jinja2.Environment] = {}
        for lang, tr in self.translations.items():
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(TEMPLATES),
                autoescape=True, extensions=["jinja2.ext.i18n"],
                trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
            env.install_gettext_translations(tr, newstyle=True)  # type: ignore[attr-defined]
            self.envs[lang] = env

    def gettext(self, lang: str, message: str) -> str:
        return self.translations[lang].gettext(message)


def choose(explicit: str | None, cookie: str | None, accept_language: str | None) -> str:
    """``zh-CN`` or ``en``: the switch, then the remembered choice, then the browser."""
    for value in (explicit, cookie):
        if value in LANGUAGES:
            return value
    return "en" if negotiate_language(accept_language, None) == "en" else DEFAULT
