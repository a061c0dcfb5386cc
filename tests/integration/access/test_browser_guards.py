"""Browsers cannot be turned against the platform (issue 11, finding 4 and parts of 9).

Attack matrix at the HTTP door in open local mode, where a loopback request without
credentials is the local operator: DNS rebinding (a foreign Host), cross-site
state-changing requests (a foreign Origin/Referer), forged proxy headers, and /metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import TEST_SECURITY
from tests.factories import make_ct, multipart, to_bytes
from tests.integration.access.conftest import Province

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services, WebAccess

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ADMIN = {"Authorization": f"Bearer {TEST_SECURITY.admin_token.get_secret_value()}"}  # type: ignore[union-attr]


def _client(services: Services, *, client: tuple[str, int] = ("testclient", 50000),
            **web: Any) -> TestClient:
    if web:
        services = dataclasses.replace(
            services, web=dataclasses.replace(services.web, **web))
    return TestClient(create_app(services), client=client)


@pytest.fixture
def local(province: Province) -> Iterator[TestClient]:
    with _client(province.services) as client:
        yield client


# -- DNS rebinding: the Host must name this server ---------------------------------------


def test_foreign_host_gets_nothing(local: TestClient, province: Province) -> None:
    series, sop = province.uids[province.sa1]
    paths = ["/api/v1/sms/outbox", "/dicomweb/studies", "/api/v1/accounts", "/metrics",
             f"/dicomweb/studies/{province.sa1}/series/{series}/instances/{sop}"]
    for host in ("rebind.attacker.example", "rebind.attacker.example:8042",
                 "localhost.attacker.example", "127.0.0.1.nip.io", ""):
        for path in paths:
            response = local.get(path, headers={"Host": host})
            assert response.status_code == 400, (host, path, response.text)
            assert response.json()["error"] == "host-not-allowed"
    for host in ("localhost", "localhost:8042", "127.0.0.1:8042", "[::1]:8042", "LOCALHOST",
                 "testserver"):
        assert local.get("/api/v1/sms/outbox", headers={"Host": host}).status_code == 200


def test_configured_names_and_wildcards(province: Province) -> None:
    with _client(province.services, allowed_hosts=("pacs.example.org", "*.hospital.cn")) as c:
        outbox = "/api/v1/sms/outbox"
        assert c.get(outbox, headers={"Host": "pacs.example.org"}).status_code == 200
        assert c.get(outbox, headers={"Host": "ha.hospital.cn:443"}).status_code == 200
        assert c.get(outbox, headers={"Host": "hospital.cn.evil"}).status_code == 400
        assert c.get(outbox, headers={"Host": "localhost"}).status_code == 400
        # a load balancer's health probe by IP address is answered
        assert c.get("/healthz", headers={"Host": "10.0.0.8:8042"}).status_code == 200


# -- cross-site requests ------------------------------------------------------------------


CROSS_SITE = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "null"},  # sandboxed frame, file: page
    {"Origin": "https://testserver.evil.example"},
    {"Referer": "http://evil.example/page.html"},
    {"Origin": "http://evil.example", "Referer": "http://testserver/"},
]


def test_cross_site_state_change_is_refused(local: TestClient, province: Province) -> None:
    account = province.doctor.account_id
    for headers in CROSS_SITE:
        # a body-less POST, as a cross-site <form> or fetch(no-cors) sends it
        response = local.post(f"/api/v1/accounts/{account}/deactivate", headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["error"] == "cross-origin"
        for method in ("PUT", "PATCH", "DELETE"):
            refused = local.request(method, "/api/v1/hospitals/HA", headers=headers)
            assert refused.status_code == 403
    # the account is still active: nothing ran
    [row] = [a for a in province.services.accounts.list_accounts(by=_operator())
             if a.id == account]
    assert row.active


def _operator() -> Any:
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    return LOCAL_OPERATOR


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver"},
                                     {"Referer": "http://testserver/workstation"}])
def test_same_origin_or_headerless_requests_pass(local: TestClient, province: Province,
                                                 headers: dict[str, str]) -> None:
    response = local.post(f"/api/v1/accounts/{province.doctor.account_id}/deactivate",
                          headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False


def test_trusted_origin_and_safe_methods(province: Province) -> None:
    with _client(province.services, trusted_origins=("https://viewer.example.org",)) as c:
        ok = c.post(f"/api/v1/accounts/{province.doctor.account_id}/deactivate",
                    headers={"Origin": "https://viewer.example.org"})
        assert ok.status_code == 200
        # a GET with a foreign Origin is served (no CORS headers: the page cannot read it)
        read = c.get("/api/v1/sms/outbox", headers={"Origin": "http://evil.example"})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers


# -- proxy headers --------------------------------------------------------------------------


def _stow_retrieve_url(client: TestClient, headers: dict[str, str]) -> str:
    body, content_type = multipart([to_bytes(make_ct())])
    response = client.post("/dicomweb/studies", content=body,
                           headers={"Content-Type": content_type, **headers})
    assert response.status_code == 200, response.text
    return str(response.json()["00081190"]["Value"][0])


FORGED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
          "X-Forwarded-For": "203.0.113.9"}


def test_forwarded_headers_from_anyone_are_ignored(local: TestClient) -> None:
    url = _stow_retrieve_url(local, FORGED)
    assert url.startswith("http://testserver/dicomweb/studies/")
    # X-Forwarded-For did not change who is asking: still the local operator
    assert local.get("/api/v1/sms/outbox", headers=FORGED).status_code == 200


def test_forwarded_headers_from_a_trusted_proxy_are_used(province: Province) -> None:
    token = province.services.credentials.issue("HA").token
    hospital = {"Authorization": f"Bearer {token}"}
    with _client(province.services, client=("10.1.2.3", 40000),
                 trusted_proxies=("10.1.0.0/16",)) as proxy:
        url = _stow_retrieve_url(proxy, {**FORGED, **hospital})
        assert url.startswith("https://evil.example/dicomweb/studies/")
    with _client(province.services, client=("10.2.0.1", 40000),
                 trusted_proxies=("10.1.0.0/16",)) as stranger:
        url = _stow_retrieve_url(stranger, {**FORGED, **hospital})
        assert url.startswith("http://testserver/dicomweb/studies/")


def test_a_trusted_proxy_forwards_the_real_client(province: Province) -> None:
    # The proxy forwards a remote client: not the local operator, whatever its TCP peer.
    with _client(province.services, client=("127.0.0.1", 40000),
                 trusted_proxies=("127.0.0.1",)) as proxy:
        remote = proxy.get("/api/v1/sms/outbox", headers={"X-Forwarded-For": "203.0.113.9"})
        assert remote.status_code == 401
        assert proxy.get("/api/v1/sms/outbox").status_code == 200


# -- /metrics ----------------------------------------------------------------------------


def test_metrics_need_operator_admin_or_scraper(province: Province) -> None:
    closed = dataclasses.replace(province.services, local_access=dataclasses.replace(
        province.services.local_access, open=False))
    with _client(closed) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/metrics", headers=ADMIN).status_code == 200
        hospital = province.services.credentials.issue("HA")
        token = {"Authorization": f"Bearer {hospital.token}"}
        assert anonymous.get("/metrics", headers=token).status_code == 403
    with _client(closed, client=("192.0.2.7", 9000), metrics_clients=("192.0.2.0/28",)) as s:
        assert "cloudfilm_http_requests_total" in s.get("/metrics").text
    with _client(closed, client=("192.0.2.70", 9000), metrics_clients=("192.0.2.0/28",)) as s:
        assert s.get("/metrics").status_code == 401
    with _client(province.services) as operator:  # open local mode: the local operator
        assert operator.get("/metrics").status_code == 200


def test_web_access_defaults_are_closed(db_url: str) -> None:
    web = WebAccess()
    assert web.trusted_proxies == () and web.metrics_clients == ()
    assert "testserver" not in web.allowed_hosts
