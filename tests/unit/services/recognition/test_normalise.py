"""Normalisation of body part, description, modality and technique (no database)."""

from __future__ import annotations

import pydicom
import pytest
from tests.conftest import shared_file

from cloudfilm.services.recognition import catalogue
from cloudfilm.services.recognition.normalise import (
    StudyFacts,
    Term,
    Terms,
    Unmapped,
    classify,
    normalise_text,
)

TERMS = Terms(Term(*row) for row in catalogue.terms())


def facts(modality: str = "CT", body: str = "", description: str = "",
          codes: tuple[tuple[str, str, str], ...] = ()) -> StudyFacts:
    return StudyFacts([modality], [body], description, codes)


@pytest.mark.parametrize(("body", "region"), [
    ("CHEST", "CHEST"), ("Chest", "CHEST"), ("THORAX", "CHEST"), ("胸部", "CHEST"),
    ("ＣＨＥＳＴ", "CHEST"), ("HEAD", "HEAD"), ("Brain", "HEAD"), ("SKULL", "HEAD"),
    ("头颅", "HEAD"), ("腹部", "ABDOMEN"), ("Abdomen", "ABDOMEN"), ("L_SPINE", "LSPINE"),
    ("L-SPINE", "LSPINE"), ("腰椎", "LSPINE"), ("乳腺", "BREAST"),
])
def test_body_part_examined_chinese_and_english(body: str, region: str) -> None:
    result = classify(facts(body=body), TERMS)
    assert (result.modality, result.body_region, result.unmapped) == ("CT", region, ())


@pytest.mark.parametrize(("description", "region", "technique"), [
    ("胸部CT平扫", "CHEST", "plain"),
    ("胸部CT增强", "CHEST", "contrast"),
    ("头颅CT", "HEAD", "plain"),
    ("CT, HEAD/BRAIN WO CONTRAST", "HEAD", "plain"),  # "without" is not contrast
    ("CT CHEST C+", "CHEST", "contrast"),
    ("上腹部 MR", "ABDOMEN", "plain"),
    ("胸椎MR", "TSPINE", "plain"),  # the longest pattern wins: 胸椎 is not 胸
])
def test_description_when_no_body_part(description: str, region: str, technique: str) -> None:
    result = classify(facts(description=description), TERMS)
    assert (result.body_region, result.technique) == (region, technique)
    assert result.unmapped == ()


def test_unmapped_values_are_listed_never_guessed() -> None:
    result = classify(facts(body="BACINO", description="Esame 12"), TERMS)
    assert result.body_region == ""
    assert Unmapped("body_part", "BACINO", "unmapped") in result.unmapped
    assert Unmapped("description", "ESAME 12", "unmapped") in result.unmapped


def test_body_part_unmapped_but_description_maps_still_lists_the_body_part() -> None:
    result = classify(facts(body="BACINO", description="CT THORAX"), TERMS)
    assert result.body_region == "CHEST"  # the description says so explicitly
    assert Unmapped("body_part", "BACINO", "unmapped") in result.unmapped


def test_two_regions_are_ambiguous_not_a_choice() -> None:
    result = classify(facts(description="胸腹部CT平扫"), TERMS)
    assert result.body_region == ""
    assert [u.problem for u in result.unmapped] == ["ambiguous"]
    two = classify(StudyFacts(["CT", "CT"], ["CHEST", "ABDOMEN"], ""), TERMS)
    assert two.body_region == "" and two.unmapped[0].problem == "ambiguous"


def test_modalities_cr_dx_are_dx_and_objects_are_ignored() -> None:
    result = classify(StudyFacts(["CR", "SR", "PR"], ["CHEST", "", ""], ""), TERMS)
    assert (result.modality, result.body_region) == ("DX", "CHEST")
    pet = classify(StudyFacts(["PT", "CT"], ["CHEST", "CHEST"], ""), TERMS)
    assert pet.modality == "" and Unmapped("modality", "PT", "unmapped") in pet.unmapped


def test_a_mapped_procedure_code_names_the_item() -> None:
    terms = Terms([*(Term(*row) for row in catalogue.terms()),
                   Term("procedure_code", "LN:24627-2", "CT-CHEST")])
    result = classify(facts(codes=(("LN", "24627-2", "CT Chest"),)), terms)
    assert result.item_code == "CT-CHEST" and result.body_region == "CHEST"
    unknown = classify(facts(codes=(("LN", "99999-9", ""),)), TERMS)
    assert Unmapped("procedure_code", "LN:99999-9", "unmapped") in unknown.unmapped


def test_normalise_text() -> None:
    assert normalise_text("  ｃｈｅｓｔ   pa ") == "CHEST PA"
    assert normalise_text("L_SPINE") == normalise_text("l-spine") == "L SPINE"


@pytest.mark.parametrize(("relative", "modality", "region"), [
    ("ct/SignedCT.dcm", "CT", "CHEST"),  # StudyDescription "CT THORAX"
    ("studies/dicomdirtests/77654033/CT2/17106", "CT", "HEAD"),
    ("charsets/chrJapMulti.dcm", "DX", "CHEST"),  # CR, BodyPartExamined CHEST
    ("malformed/GH1146_no_pixels.dcm", "MR", "HEAD"),  # "Brain"
    ("mr/siemens_mr_with_overlay.dcm", "MR", "ABDOMEN"),
    ("xray/MG_out_of_bounds_overlay.dcm", "MG", "BREAST"),
    ("studies/tcia_lctsc_ct_rtstruct/CT01.dcm", "CT", "CHEST"),  # LUNG
    ("malformed/GH178_no_pixels.dcm", "CT", ""),  # "CT THORACO-ABDOMINAL": listed
])
def test_real_headers(relative: str, modality: str, region: str) -> None:
    ds = pydicom.dcmread(shared_file(relative), stop_before_pixels=True, force=True)
    result = classify(StudyFacts([str(ds.get("Modality", ""))],
                                 [str(ds.get("BodyPartExamined", "") or "")],
                                 str(ds.get("StudyDescription", "") or "")), TERMS)
    assert (result.modality, result.body_region) == (modality, region)
    assert bool(result.unmapped) == (region == "")
