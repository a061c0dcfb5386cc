"""The seeded catalogue: items, normalisation terms and prices written on first use.

Everything here is *data an administrator edits* afterwards (REST, CLI); the seed only
gives a new platform something sensible.

Sources and honesty:

- Items and validity windows are **illustrative**, modelled on the structure of the 2022
  national measures (国家卫生健康委等《医疗机构检查检验结果互认管理办法》, 国卫医发〔2022〕6号)
  and of published provincial catalogues, which set windows per item (commonly CT 30 days,
  MR 30-90 days, DR 7-30 days, ultrasound 7-30 days). They are not a copy of any province's
  list: load your province's catalogue before production use.
- Level rule (``accept``): a hospital must accept results of hospitals of its own level
  or above (the measures' principle that lower levels recognise higher ones; tertiary
  accepts tertiary). Its own results are always accepted.
- Typical effective doses (mSv): Mettler FA Jr et al., "Effective doses in radiology and
  diagnostic nuclear medicine: a catalog", Radiology 2008;248(1):254-263, Tables 1-2
  (head CT 2, chest CT 7, abdomen CT 8, pelvis CT 6, spine CT 6; chest PA radiograph 0.02,
  lumbar spine radiograph 1.5, pelvis radiograph 0.6, knee 0.005, mammography 0.4).
- Prices (yuan) are **illustrative** round figures, not a tariff; edit them per province.
"""

from __future__ import annotations

from typing import Any

LEVELS = ("tertiary", "secondary", "primary")
ACCEPT_DEFAULT: dict[str, list[str]] = {
    "tertiary": ["tertiary"],
    "secondary": ["tertiary", "secondary"],
    "primary": ["tertiary", "secondary", "primary"],
}

# code, zh, en, modality, region, technique, window days, dose mSv, tertiary price
_ITEMS: tuple[tuple[str, str, str, str, str, str, int, float | None, float], ...] = (
    ("CT-HEAD", "头颅CT平扫", "CT head, plain", "CT", "HEAD", "plain", 30, 2.0, 200),
    ("CT-CHEST", "胸部CT平扫", "CT chest, plain", "CT", "CHEST", "plain", 30, 7.0, 220),
    ("CT-CHEST-C", "胸部CT增强", "CT chest, contrast", "CT", "CHEST", "contrast", 30, 7.0, 480),
    ("CT-ABDOMEN", "上腹部CT平扫", "CT abdomen, plain", "CT", "ABDOMEN", "plain", 30, 8.0, 240),
    ("CT-PELVIS", "盆腔CT平扫", "CT pelvis, plain", "CT", "PELVIS", "plain", 30, 6.0, 240),
    ("CT-LSPINE", "腰椎CT平扫", "CT lumbar spine, plain", "CT", "LSPINE", "plain", 60, 6.0, 220),
    ("MR-HEAD", "头颅MR平扫", "MR head, plain", "MR", "HEAD", "plain", 60, None, 450),
    ("MR-CSPINE", "颈椎MR平扫", "MR cervical spine, plain", "MR", "CSPINE", "plain", 90, None,
     450),
    ("MR-LSPINE", "腰椎MR平扫", "MR lumbar spine, plain", "MR", "LSPINE", "plain", 90, None,
     450),
    ("MR-KNEE", "膝关节MR平扫", "MR knee, plain", "MR", "KNEE", "plain", 90, None, 450),
    ("MR-ABDOMEN", "上腹部MR平扫", "MR abdomen, plain", "MR", "ABDOMEN", "plain", 30, None,
     550),
    ("DR-CHEST", "胸部正位片(DR)", "Chest radiograph (DR)", "DX", "CHEST", "any", 14, 0.02, 60),
    ("DR-LSPINE", "腰椎正侧位片(DR)", "Lumbar spine radiograph (DR)", "DX", "LSPINE", "any", 30,
     1.5, 80),
    ("DR-PELVIS", "骨盆正位片(DR)", "Pelvis radiograph (DR)", "DX", "PELVIS", "any", 30, 0.6,
     60),
    ("DR-KNEE", "膝关节正侧位片(DR)", "Knee radiograph (DR)", "DX", "KNEE", "any", 30, 0.005,
     60),
    ("US-ABDOMEN", "腹部超声", "Ultrasound abdomen", "US", "ABDOMEN", "any", 7, None, 120),
    ("US-THYROID", "甲状腺超声", "Ultrasound thyroid", "US", "THYROID", "any", 30, None, 100),
    ("US-BREAST", "乳腺超声", "Ultrasound breast", "US", "BREAST", "any", 30, None, 100),
    ("MG-BREAST", "乳腺钼靶摄影", "Mammography", "MG", "BREAST", "any", 180, 0.4, 150),
)
# Secondary and primary hospitals charge less (illustrative ratios).
_PRICE_RATIO = {"tertiary": 1.0, "secondary": 0.9, "primary": 0.8}

SEED_BY = "seed"


def items() -> list[dict[str, Any]]:
    """The seeded items as rows of ``recognition_item`` (without timestamps)."""
    return [{"code": c, "name_zh": zh, "name_en": en, "modality": m, "body_region": r,
             "procedure": p, "window_days": w, "accept_levels": ACCEPT_DEFAULT,
             "require_final_report": True, "require_complete": True, "require_qc": False,
             "typical_dose_msv": dose, "active": True}
            for c, zh, en, m, r, p, w, dose, _ in _ITEMS]


def prices() -> list[tuple[str, str, float]]:
    return [(c, level, round(price * _PRICE_RATIO[level], 2))
            for c, *_rest, price in _ITEMS for level in LEVELS]


# region -> patterns (Chinese and English, DICOM defined terms of BodyPartExamined)
_REGIONS: dict[str, tuple[str, ...]] = {
    "CHEST": ("CHEST", "THORAX", "LUNG", "胸部", "胸", "肺", "胸廓", "CHEST PA", "肺部"),
    "HEAD": ("HEAD", "BRAIN", "SKULL", "头颅", "头部", "颅脑", "脑", "颅", "CRANIUM"),
    "ABDOMEN": ("ABDOMEN", "腹部", "上腹部", "上腹", "LIVER", "肝脏", "肝", "ABD"),
    "PELVIS": ("PELVIS", "盆腔", "骨盆", "HIP"),
    "CSPINE": ("CSPINE", "C-SPINE", "CERVICAL SPINE", "颈椎"),
    "TSPINE": ("TSPINE", "T-SPINE", "THORACIC SPINE", "胸椎"),
    "LSPINE": ("LSPINE", "L-SPINE", "LUMBAR SPINE", "腰椎"),
    "KNEE": ("KNEE", "膝关节", "膝"),
    "BREAST": ("BREAST", "乳腺", "乳房", "MAMMO"),
    "THYROID": ("THYROID", "甲状腺"),
    "NECK": ("NECK", "颈部"),
}
# Single characters are too short for free text except these unambiguous ones.
_NOT_IN_TEXT = frozenset({"ABD", "颅", "HIP"})
_MODALITIES = {"CT": "CT", "MR": "MR", "CR": "DX", "DX": "DX", "DR": "DX", "US": "US",
               "MG": "MG"}
_TECHNIQUE = {"增强": "contrast", "CONTRAST": "contrast", "ENHANCE": "contrast",
              "C+": "contrast", "IVCON": "contrast", "平扫": "plain", "PLAIN": "plain",
              "NON-CONTRAST": "plain", "NONCONTRAST": "plain", "WO CONTRAST": "plain",
              "W/O CONTRAST": "plain", "WITHOUT CONTRAST": "plain", "WO IVCON": "plain"}


def terms() -> list[tuple[str, str, str, str]]:
    """(field, pattern, value, match) rows of ``recognition_term``."""
    rows: list[tuple[str, str, str, str]] = []
    for region, patterns in _REGIONS.items():
        for p in patterns:
            rows.append(("body_part", p, region, "exact"))
            if p not in _NOT_IN_TEXT:
                rows.append(("description", p, region, "contains"))
    rows += [("modality", k, v, "exact") for k, v in _MODALITIES.items()]
    rows += [("technique", k, v, "contains") for k, v in _TECHNIQUE.items()]
    return rows
