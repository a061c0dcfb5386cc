"""Architecture test: authorisation goes through permissions (issue 11, "one permission
model"). No service or door compares an actor's ``kind`` (``.kind ==``, ``!=``, ``in``,
``not in``); ``kind`` only labels (audit records, JSON) and says which authentication
path a caller took. Only the kernel (which maps kinds to roles) and the one rule source
(``services/access/rules.py``) may read it to decide.

The check walks the syntax tree, so a comparison split over lines or written
``"admin" == actor.kind`` is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cloudfilm

ROOT = Path(cloudfilm.__file__).parent
SCANNED = ("services", "interfaces")
EXEMPT_MODULES = ("services/kernel/", "services/access/rules.py")

ALLOWED: dict[tuple[str, str], str] = {
    ("services/ai/registry.py", "data.kind"):
        "an AI algorithm's kind (in-process plug-in or external engine), not an actor's",
    ("services/ai/worklist.py", "live.kind"):
        "an AI algorithm row's kind (only plug-ins run in-process)",
    # (module, the compared expression): why it is not an actor's kind.
    ("services/access/accounts.py", "account.kind"):
        "an account row's kind: which sign-in path, which roles the session's actor gets, "
        "and which accounts a hospital administrator manages (its doctors)",
    ("services/access/accounts.py", "found.kind"):
        "an account row's kind at password sign-in (residents sign in by phone)",
    ("services/archive/query.py", "cond.kind"): "a query condition's kind (exact, range...)",
    ("services/storage/service.py", "row.kind"):
        "a storage job row's kind (tier move or lossless re-encoding)",
}


def kind_comparisons(source: str) -> list[tuple[int, str]]:
    """``(line, expression)`` of each ``X.kind`` compared with ==, !=, in or not in."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn)
                   for op in node.ops):
            continue
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.Attribute) and side.attr == "kind":
                found.append((side.lineno, ast.unparse(side)))
    return found


def _modules() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_the_scan_sees_the_code() -> None:
    # A scan of nothing would pass for ever: the policy's own modules are there.
    names = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert {"services/access/policy.py", "services/access/consent.py",
            "interfaces/api/http.py"} <= names


@pytest.mark.parametrize("source", [
    'if actor.kind not in ("admin", "operator"):\n    pass\n',
    'ok = "hospital" == by.kind\n',
    'ok = (actor.kind\n      != "doctor")\n',
    'ok = self.actor.kind in ADMINS\n',
])
def test_the_scan_finds_kind_checks(source: str) -> None:
    assert kind_comparisons(source)


def test_labels_are_not_checks() -> None:
    assert not kind_comparisons('entry = {"actor_kind": actor.kind}\n'
                                'label = f"{actor.kind}:{actor.subject}"\n'
                                'ok = actor.can(Permission.READ_AUDIT)\n')


def test_no_service_or_door_decides_on_an_actor_kind() -> None:
    offenders = []
    for path in _modules():
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(EXEMPT_MODULES):
            continue
        for line, expr in kind_comparisons(path.read_text(encoding="utf-8")):
            if (name, expr) not in ALLOWED:
                offenders.append(f"{name}:{line}: {expr}")
    assert not offenders, (
        "authorise with actor.can(Permission.X) or policy.require/enforce, not the actor's "
        "kind (add a Permission to services/kernel/actor.py if none fits): "
        + "; ".join(offenders))


def test_the_allow_list_has_no_stale_entries() -> None:
    # An allowance outlives its use only by mistake: keep the list exact.
    used: set[tuple[str, str]] = set()
    for path in _modules():
        name = path.relative_to(ROOT).as_posix()
        used.update((name, expr) for _, expr in kind_comparisons(
            path.read_text(encoding="utf-8")))
    assert set(ALLOWED) <= used
