"""Metric labels stay bounded: surfaces by route template, doors from a fixed set; the
UIDs a reconciliation derives are valid and stable."""

from __future__ import annotations

from types import SimpleNamespace

from cloudfilm.infrastructure.dicom.uids import is_valid_uid
from cloudfilm.interfaces.api.http import api_of, route_template
from cloudfilm.services.archive import ingest_metrics
from cloudfilm.services.archive.reconcile import derived_uid


def test_surfaces_are_told_apart() -> None:
    assert api_of("/dicomweb/studies/{study}/series") == "dicomweb"
    assert api_of("/wado") == "dicomweb"
    assert api_of("/api/v1/reconciliation/{item_id}") == "rest"
    assert api_of("/cds-services/{service_id}") == "rest"
    assert api_of("/portal/studies/{uid}") == "web"
    assert api_of("/metrics") == "ops" and api_of("unmatched") == "ops"


def test_route_template_prefers_the_full_path_of_an_included_route() -> None:
    context = SimpleNamespace(path="/dicomweb/studies/{study}")
    scope = {"fastapi": {"effective_route_context": context},
             "route": SimpleNamespace(path="/studies/{study}")}
    assert route_template(scope) == "/dicomweb/studies/{study}"
    assert route_template({"route": SimpleNamespace(path="/healthz")}) == "/healthz"
    assert route_template({}) == "unmatched"


def test_unknown_doors_are_counted_as_other() -> None:
    assert ingest_metrics.door_label("c-store") == "c-store"
    assert ingest_metrics.door_label("1.2.3.4 from somewhere") == "other"


def test_derived_uids_are_valid_stable_and_distinct() -> None:
    uid = derived_uid("H1", "study", "1.2.3")
    assert is_valid_uid(uid) and uid.startswith("2.25.") and len(uid) <= 64
    assert uid == derived_uid("H1", "study", "1.2.3")
    assert uid != derived_uid("H2", "study", "1.2.3")
    assert uid != derived_uid("H1", "series", "1.2.3")
