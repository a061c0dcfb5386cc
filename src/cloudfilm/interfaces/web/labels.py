"""Plain words for what a study is (胸部CT, 头颅MR), the way a hospital says it to a patient.

Body parts come from BodyPartExamined (PS3.16 CID 4031 code strings), else from words of the
study description; the words themselves go through the gettext catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from babel.dates import format_date

# msgid (English, translated by the catalogue) of each BodyPartExamined value.
BODY_PARTS = {
    "CHEST": "Chest", "THORAX": "Chest", "LUNG": "Chest", "HEAD": "Head", "BRAIN": "Head",
    "SKULL": "Head", "ABDOMEN": "Abdomen", "PELVIS": "Pelvis", "NECK": "Neck",
    "CSPINE": "Cervical spine", "TSPINE": "Thoracic spine", "LSPINE": "Lumbar spine",
    "SPINE": "Spine", "KNEE": "Knee", "SHOULDER": "Shoulder", "HIP": "Hip", "HAND": "Hand",
    "FOOT": "Foot", "BREAST": "Breast", "HEART": "Heart", "LIVER": "Liver",
    "EXTREMITY": "Limb", "WHOLEBODY": "Whole body",
}
# msgid of each modality; CT and MR stay as patients know them.
MODALITIES = {
    "CT": "CT", "MR": "MR", "DX": "X-ray", "CR": "X-ray", "DR": "X-ray", "RF": "X-ray",
    "US": "Ultrasound", "MG": "Mammography", "PT": "PET", "NM": "Nuclear medicine",
    "XA": "Angiography", "OT": "Other", "SR": "Report", "DOC": "Report",
}
REPORT_STATUS = {"none": "No report yet", "preliminary": "Preliminary report",
                 "final": "Final report", "amended": "Amended report"}

# What an access-log entry did, in a patient's words (msgids; unknown actions: "Other access").
ACTIONS = {
    "search": "Searched your studies", "metadata": "Opened a study", "retrieve": "Opened images",
    "frames": "Opened images", "render": "Viewed images", "view": "Viewed images",
    "bulkdata": "Opened images",
    "report": "Read a report", "download": "Downloaded", "identity.read": "Read your details",
    "identity.xref": "Looked you up", "identity.family.link": "Recorded a family link",
    "grant.request": "Asked to see your records", "grant.approve": "Approved access",
    "grant.deny": "Denied access", "grant.revoke": "Revoked access",
    "grant.break_glass": "Emergency access", "grant.in_person": "Access given in person",
    "grant.sms_confirm": "Access confirmed with your SMS code",
    "share.open": "Opened your share link", "share.create": "Created a share link",
    "share.revoke": "Stopped a share link",
    "family.ask": "Asked to act for you as family", "family.confirm": "Tried to add you as family",
    # AI assistance (issue 19)
    "ai.read": "An AI algorithm read your images",
    "ai.read.deidentified": "An AI algorithm read your de-identified images",
    "ai.results": "Looked at AI results", "ai.segmentation": "Looked at AI results",
    "ai.review": "A doctor reviewed AI results",
}
WHO = {"administrator": "Platform administrator", "admin": "Platform administrator",
       "local operator": "Platform operator"}

Gettext = Callable[[str], str]


def action(value: str) -> str:
    return ACTIONS.get(value, "Other access")


def body_part(codes: Iterable[str], description: str) -> str | None:
    """The first known body part of the series, else one named in the description."""
    for code in codes:
        key = code.upper().replace(" ", "").replace("_", "")
        if key in BODY_PARTS:
            return BODY_PARTS[key]
    for word in description.upper().replace("^", " ").replace("/", " ").split():
        if word in BODY_PARTS:
            return BODY_PARTS[word]
    return None


def study_title(_: Gettext, lang: str, modalities: Iterable[str], body_parts: Iterable[str],
                description: str) -> str:
    """``胸部CT`` / ``Chest CT``; the description when nothing is known."""
    shown = [m for m in modalities if m not in ("SR", "DOC", "KO", "PR")] or list(modalities)
    modality = _(MODALITIES.get(shown[0], shown[0])) if shown else ""
    part = body_part(body_parts, description)
    if part is None:
        return modality or description or _("Imaging study")
    joiner = "" if lang == "zh-CN" else " "
    return f"{_(part)}{joiner}{modality}".strip()


def da_date(value: str, lang: str) -> str:
    """A DICOM DA as the locale writes a date (2024年1月5日 / Jan 5, 2024)."""
    from datetime import date

    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return value or "—"
    return format_date(day, format="medium", locale="zh_CN" if lang == "zh-CN" else "en")


def person(name: str) -> str:
    """A DICOM/MPI person name for display: the ideographic group when there is one."""
    groups = name.split("=")
    chosen = next((g for g in reversed(groups[:2]) if g.strip("^ ")), groups[0])
    parts = [p for p in chosen.split("^") if p]
    if len(groups) > 1 and groups[1].strip("^ "):
        return "".join(parts)
    return " ".join(reversed(parts[:2])) if len(parts) > 1 else "".join(parts)


def size(n: int) -> str:
    """A download's size as people read it (decimal units, like phones show storage)."""
    if n < 1_000_000:
        return f"{max(n, 1000) // 1000} KB"
    return f"{n / 1_000_000:.1f} MB"
