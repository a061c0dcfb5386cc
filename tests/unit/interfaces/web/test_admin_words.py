"""The admin pages' words from code (navigation, reasons, levels, fields, techniques)
have Chinese translations, and the admin catalogue does not change the portal's words."""

from __future__ import annotations

from cloudfilm.interfaces.web import admin
from cloudfilm.interfaces.web.i18n import load_translations


def test_admin_labels_in_chinese() -> None:
    zh = load_translations("zh-CN")
    wanted = ({s.group for s in admin.SECTIONS} | {s.label for s in admin.SECTIONS}
              | {s.summary for s in admin.SECTIONS} | set(admin.REASON_LABELS.values())
              | set(admin.LEVEL_LABELS.values()) | set(admin.FIELD_LABELS.values())
              | {"plain", "contrast", "any", "create", "update", "delete", "unmapped",
                 "ambiguous", "unregistered"})
    missing = sorted(m for m in wanted if zh.gettext(m) == m)
    assert missing == []
    # Merged catalogues: a word the portal translates keeps the portal's translation.
    assert zh.gettext("active") == "有效"
