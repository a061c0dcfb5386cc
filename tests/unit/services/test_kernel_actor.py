"""Roles and permissions on the Actor: kinds map to roles, roles to permissions, and an
actor of no known kind may do nothing."""

from __future__ import annotations

import pytest

from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.access.rules import Facts, scope_of
from cloudfilm.services.kernel import Actor, Permission, Role


def test_kinds_give_their_roles_and_explicit_roles_win() -> None:
    assert Actor(kind="doctor", subject="a").roles == {Role.DOCTOR}
    assert Actor(kind="hospital", subject="H").roles == {Role.HOSPITAL_SYSTEM}
    assert LOCAL_OPERATOR.roles == {Role.OPERATOR}
    admin = Actor(kind="doctor", subject="a", roles=frozenset({Role.DOCTOR,
                                                               Role.HOSPITAL_ADMIN}))
    assert admin.can(Permission.RESET_REGISTRATION) and admin.can(Permission.READ_STUDY)
    assert not Actor(kind="doctor", subject="a").can(Permission.RESET_REGISTRATION)


@pytest.mark.parametrize(("kind", "allowed", "refused"), [
    ("operator", [Permission.READ_AUDIT, Permission.STORE_FOR_ANY_HOSPITAL], []),
    ("admin", [Permission.READ_AUDIT, Permission.MANAGE_HOSPITALS, Permission.READ_SMS_OUTBOX],
     [Permission.STORE, Permission.DECIDE_GRANT]),
    ("hospital", [Permission.STORE, Permission.READ_STUDY],
     [Permission.READ_AUDIT, Permission.REQUEST_GRANT, Permission.READ_ANY_PATIENT]),
    ("doctor", [Permission.REQUEST_GRANT, Permission.READ_STUDY],
     [Permission.STORE, Permission.READ_AUDIT, Permission.READ_SMS_OUTBOX]),
    ("resident", [Permission.READ_OWN_ACCESS_LOG, Permission.DECIDE_GRANT],
     [Permission.READ_AUDIT, Permission.STORE, Permission.READ_ALL_TIMELINESS]),
    ("researcher", [], list(Permission)),
])
def test_what_each_kind_may_do(kind: str, allowed: list[Permission],
                               refused: list[Permission]) -> None:
    actor = Actor(kind=kind, subject="x")  # type: ignore[arg-type]
    assert all(actor.can(p) for p in allowed)
    assert not any(actor.can(p) for p in refused)


def test_a_hospital_administrator_alone_sees_no_patient_data() -> None:
    only_admin = Actor(kind="doctor", subject="a", hospital_id=1,
                       roles=frozenset({Role.HOSPITAL_ADMIN}))
    facts = Facts(hospital_id=1, hospital_code="HA", resident_id=5, study_uid="1.2")
    assert scope_of(only_admin).admits(facts) == (False, "unknown-actor")
    doctor = Actor(kind="doctor", subject="a", hospital_id=1)
    assert scope_of(doctor).admits(facts) == (True, "own-hospital")
    # a named grant never covers a held report (no study yet)
    held = Facts(hospital_id=2, hospital_code="HB", resident_id=5, study_uid=None)
    assert scope_of(doctor, {5: frozenset({"1.2"})}).admits(held) == (False, "not-in-grant")
    assert scope_of(doctor, {5: None}).admits(held) == (True, "grant")


HOSPITAL_ADMIN = Actor(kind="doctor", subject="a", hospital_id=1,
                       roles=frozenset({Role.DOCTOR, Role.HOSPITAL_ADMIN}))


@pytest.mark.parametrize(("actor", "allowed", "refused"), [
    (Actor(kind="hospital", subject="H"),
     [Permission.REGISTER_PATIENTS, Permission.ISSUE_ACTIVATION_CODES,
      Permission.SEND_HEARTBEAT, Permission.CHECK_RECOGNITION],
     [Permission.MANAGE_PATIENT_INDEX, Permission.READ_GATEWAYS,
      Permission.MANAGE_RECOGNITION_RULES, Permission.REVIEW_GRANTS]),
    (HOSPITAL_ADMIN,
     [Permission.ISSUE_ACTIVATION_CODES, Permission.REVIEW_GRANTS, Permission.REQUEST_GRANT],
     [Permission.REVIEW_ALL_GRANTS, Permission.MANAGE_ACCOUNTS, Permission.REGISTER_PATIENTS,
      Permission.SEND_HEARTBEAT, Permission.READ_HEALTH]),
    (Actor(kind="admin", subject="root"),
     [Permission.MANAGE_PATIENT_INDEX, Permission.REVIEW_ALL_GRANTS,
      Permission.MANAGE_RECOGNITION_RULES, Permission.READ_GATEWAYS, Permission.READ_HEALTH],
     [Permission.STORE]),
    (Actor(kind="resident", subject="r"), [Permission.DECIDE_GRANT],
     [Permission.CHECK_RECOGNITION, Permission.ISSUE_ACTIVATION_CODES,
      Permission.REQUEST_GRANT]),
])
def test_the_permissions_that_replaced_kind_checks(actor: Actor, allowed: list[Permission],
                                                   refused: list[Permission]) -> None:
    assert [p for p in allowed if not actor.can(p)] == []
    assert [p for p in refused if actor.can(p)] == []


def test_a_share_viewer_sees_only_the_shared_study_and_may_do_nothing_else() -> None:
    from cloudfilm.services.access.rules import Facts, scope_of
    from cloudfilm.services.kernel.actor import Actor, Permission, Role

    viewer = Actor(kind="resident", subject="share:7", roles=frozenset({Role.SHARE_VIEWER}),
                   resident_ids=frozenset({5}), shared_study_uid="1.2.3")
    scope = scope_of(viewer)
    assert scope.admits(Facts(1, "HA", 5, "1.2.3"))[0]
    assert not scope.admits(Facts(1, "HA", 5, "1.2.4"))[0]  # the resident's other study
    assert not scope.admits(Facts(1, "HA", 6, "1.2.3"))[0]
    assert not any(viewer.can(p) for p in (Permission.DECIDE_GRANT, Permission.SHARE_STUDY,
                                           Permission.READ_OWN_ACCESS_LOG))
