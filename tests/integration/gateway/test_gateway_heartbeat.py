"""The cloud's heartbeat door for hospital gateways, on both databases, and attempts around it."""

from __future__ import annotations

from typing import Any

from tests.integration.identity.test_identity import ADMIN, _register

from cloudfilm.services.container import Services


def _token(services: Services, code: str) -> dict[str, str]:
    issued = services.credentials.issue(code)
    return {"Authorization": f"Bearer {issued.token}"}


def test_a_gateway_beats_and_the_commission_sees_it(services: Services, client: Any) -> None:
    _register(services, "HA")
    _register(services, "HB")
    ha = _token(services, "HA")
    beat = {"ae_title": "GW-HA", "queued": 12, "refused": 1, "oldest_unsent_seconds": 95.5,
            "bytes_queued": 123456, "quota_bytes": 10**10, "future_figure": 3}
    first = client.post("/api/v1/gateway/heartbeat", json=beat, headers=ha)
    assert first.status_code == 200, first.text
    assert first.json()["hospital_code"] == "HA" and first.json()["queued"] == 12
    second = client.post("/api/v1/gateway/heartbeat", json={**beat, "queued": 0}, headers=ha)
    assert second.status_code == 200
    assert second.json()["first_seen_at"] == first.json()["first_seen_at"]
    assert second.json()["last_seen_at"] >= first.json()["last_seen_at"]
    listed = client.get("/api/v1/gateway/heartbeats", headers=ADMIN)
    assert listed.status_code == 200
    [row] = listed.json()
    assert (row["hospital_code"], row["ae_title"], row["queued"], row["silent"]) == \
        ("HA", "GW-HA", 0, False)
    assert row["oldest_unsent_seconds"] == 95


def test_heartbeats_cannot_be_forged_or_read_by_the_wrong_caller(services: Services,
                                                                 client: Any) -> None:
    _register(services, "HA")
    _register(services, "HB")
    ha = _token(services, "HA")
    # The body cannot name another hospital: the credential decides.
    forged = client.post("/api/v1/gateway/heartbeat",
                         json={"ae_title": "GW", "hospital_code": "HB", "hospital_id": 2},
                         headers=ha)
    assert forged.status_code == 200 and forged.json()["hospital_code"] == "HA"
    wrong = {"Authorization": "Bearer cfh_not-a-real-credential"}
    assert client.post("/api/v1/gateway/heartbeat", json={}, headers=wrong).status_code == 401
    # Not a hospital system: the administrator, or the local operator without a header.
    assert client.post("/api/v1/gateway/heartbeat", json={}, headers=ADMIN).status_code == 403
    assert client.post("/api/v1/gateway/heartbeat", json={}).status_code == 403
    # A hospital cannot list the other hospitals' gateways.
    assert client.get("/api/v1/gateway/heartbeats", headers=ha).status_code == 403
    # Nonsense figures and AE titles are refused, not stored.
    for body in ({"ae_title": "A\\B"}, {"ae_title": ""}, {"queued": -1},
                 {"bytes_queued": 2**70}):
        answer = client.post("/api/v1/gateway/heartbeat", json=body, headers=ha)
        assert answer.status_code in (400, 422), (body, answer.status_code)
    rows = client.get("/api/v1/gateway/heartbeats", headers=ADMIN).json()
    assert [(r["hospital_code"], r["ae_title"]) for r in rows] == [("HA", "GW")]
