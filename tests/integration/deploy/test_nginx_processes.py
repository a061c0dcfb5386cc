"""Many processes, one archive (docs/deployment.md): two `cloudfilm serve` processes behind
nginx (deploy/nginx/cloudfilm.conf, HTTP proxy and stream balancing for DIMSE) on one
PostgreSQL index and one S3 bucket (moto's server).

A session, an SMS code and a rate limit made through one process hold on the other; both
ingest; the audit chain written by both at once verifies afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from tests.conftest import TEST_SECURITY, throwaway_pg_database
from tests.factories import make_ct, multipart, to_bytes

from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.identity import national_id

pytestmark = pytest.mark.commits

CONFIG = Path(__file__).parents[3] / "deploy" / "nginx" / "cloudfilm.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
ADMIN = {"Authorization": f"Bearer {TEST_SECURITY.admin_token.get_secret_value()}"}
PHONE, NAME = "13811110001", "赵洋玲"
NID = national_id.generate(area_code="330106", birth_date=date(1985, 6, 7), sex="F",
                           rng=random.Random(12))
SENDS_PER_PHONE = 3

if NGINX is None or not STREAM_MODULE.exists():
    pytest.skip("nginx with its stream module is not installed (apt-get install nginx "
                "libnginx-mod-stream)", allow_module_level=True)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Child:
    """A child in its own session, logging to a file (never a pipe a reader could block
    on), killed with its whole process group."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log: Path) -> Child:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        return cls(process, log)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _wait(url: str, child: Child, seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if child.process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"{url} never answered: {child.tail()}")


def nginx_config(text: str, *, http: list[int], dimse: list[int], listen: int,
                 dimse_listen: int, folder: Path) -> str:
    """deploy/nginx/cloudfilm.conf with this test's ports and paths."""
    for old, new in ((":8001 ", f":{http[0]} "), (":8002 ", f":{http[1]} "),
                     (":11113 ", f":{dimse[0]} "), (":11114 ", f":{dimse[1]} "),
                     ("listen 8080;", f"listen 127.0.0.1:{listen};"),
                     ("listen 11112;", f"listen 127.0.0.1:{dimse_listen};")):
        assert old in text, f"{old!r} is no longer in {CONFIG}"
        text = text.replace(old, new)
    # Debian's modules-enabled files name the module relative to nginx's own prefix.
    text = re.sub(r"^include /etc/nginx/modules-enabled/.*$",
                  f"load_module {STREAM_MODULE};", text, flags=re.M)
    user = "user root;" if os.geteuid() == 0 else ""
    text = re.sub(r"^user .*;$", user, text, flags=re.M)
    text = re.sub(r"^pid .*;$", f"pid {folder / 'nginx.pid'};", text, flags=re.M)
    text = re.sub(r"^error_log .*;$", f"error_log {folder / 'error.log'} warn;", text,
                  flags=re.M)
    text = re.sub(r"(client_body|proxy)_temp_path .*;",
                  lambda m: f"{m.group(1)}_temp_path {folder / m.group(1)};", text)
    return text


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two processes, nginx in front; yields their base URLs and the index URL."""
    children: list[Child] = []
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        with throwaway_pg_database(f"cloudfilm_deploy_{os.getpid()}") as db_url:
            migrate.upgrade(db_url)
            host, port = moto.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_bucket(Bucket="archive")
            http, dimse = _free_ports(2), _free_ports(2)
            listen, dimse_listen = _free_ports(2)
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
            env.update({
                "CLOUDFILM_DATABASE_URL": db_url,
                "CLOUDFILM_STORAGE_URL": f"s3://archive/blobs?endpoint_url={endpoint}"
                                         "&region=us-east-1&access_key=testing"
                                         "&secret_key=testing",
                "CLOUDFILM_AUTO_MIGRATE": "false",
                "CLOUDFILM_JOBS__WORKERS": "0",
                "CLOUDFILM_STATS__ROLLUP_MINUTES": "0",
                "CLOUDFILM_HTTP__TRUSTED_PROXIES": '["127.0.0.1"]',
                "CLOUDFILM_DIMSE__HOST": "127.0.0.1",
                "CLOUDFILM_ACCESS__OTP_SENDS_PER_PHONE_HOUR": str(SENDS_PER_PHONE),
                "CLOUDFILM_SECURITY__NATIONAL_ID_KEY":
                    TEST_SECURITY.national_id_key.get_secret_value(),
                "CLOUDFILM_SECURITY__NATIONAL_ID_HMAC_KEY":
                    TEST_SECURITY.national_id_hmac_key.get_secret_value(),
                "CLOUDFILM_SECURITY__ADMIN_TOKEN": TEST_SECURITY.admin_token.get_secret_value(),
            })
            exe = str(Path(sys.executable).with_name("cloudfilm"))
            for i in range(2):
                children.append(Child.start(
                    [exe, "serve", "--data", str(tmp_path / f"node{i}"), "--host", "127.0.0.1",
                     "--port", str(http[i]), "--dicom-port", str(dimse[i])],
                    env, tmp_path / f"node{i}.log"))
            conf = tmp_path / "nginx.conf"
            conf.write_text(nginx_config(CONFIG.read_text(), http=http, dimse=dimse,
                                         listen=listen, dimse_listen=dimse_listen,
                                         folder=tmp_path))
            assert NGINX is not None
            children.append(Child.start([NGINX, "-p", str(tmp_path), "-c", str(conf),
                                         "-g", "daemon off;"], env, tmp_path / "nginx.log"))
            nodes = [f"http://127.0.0.1:{p}" for p in http]
            for node, child in zip(nodes, children, strict=False):
                _wait(f"{node}/healthz", child)
            front = f"http://127.0.0.1:{listen}"
            _wait(f"{front}/healthz", children[-1], seconds=30)
            yield {"nodes": nodes, "front": front, "db_url": db_url,
                   "dimse": dimse_listen}
    finally:
        for child in reversed(children):
            child.kill()
        moto.stop()


def test_two_processes_behind_nginx_share_one_archive(archive: dict[str, Any]) -> None:
    a, b = archive["nodes"]
    front = archive["front"]
    with httpx.Client(timeout=60) as web:
        # Set-up through the proxy: a hospital with its credential, a resident it recorded
        # with a phone, a doctor.
        assert web.post(f"{front}/api/v1/hospitals", headers=ADMIN, json={
            "code": "HA", "name": "Hospital HA", "level": "tertiary"}).status_code == 201
        feed = {"Authorization": "Bearer " + web.post(
            f"{a}/api/v1/hospitals/HA/credentials", headers=ADMIN, json={}).json()["token"]}
        r = web.post(f"{b}/api/v1/registrations", headers=feed, json={
            "patient_id": "HA-1", "national_id": NID, "name": NAME, "phone": PHONE})
        assert r.status_code == 200 and r.json()["state"] == "linked", r.text
        assert web.post(f"{b}/api/v1/hospitals/HA/ae-titles", headers=ADMIN, json={
            "ae_title": "HAPACS", "host": "127.0.0.1", "port": 104}).status_code == 201
        assert web.post(f"{a}/api/v1/accounts", headers=ADMIN, json={
            "username": "dr.a", "password": "correct horse battery", "kind": "doctor",
            "display_name": "Dr A", "hospital_code": "HA"}).status_code == 201

        # A session made on one process is honoured, and ended, on the other.
        token = web.post(f"{b}/api/v1/auth/doctor/sign-in", json={
            "username": "dr.a", "password": "correct horse battery"}).json()["token"]
        doctor = {"Authorization": f"Bearer {token}"}
        assert web.get(f"{a}/api/v1/me", headers=doctor).status_code == 200
        assert web.post(f"{a}/api/v1/auth/sign-out", headers=doctor).status_code == 204
        assert web.get(f"{b}/api/v1/me", headers=doctor).status_code == 401

        # An SMS code texted by one process is accepted by the other, and the session it
        # opens works on the first.
        assert web.post(f"{a}/api/v1/auth/sms-code", json={"phone": PHONE}).status_code == 200
        outbox = web.get(f"{b}/api/v1/sms/outbox", headers=ADMIN,
                         params={"phone": PHONE}).json()
        code = re.search(r"\b(\d{6})\b", outbox[0]["text"])
        assert code, outbox
        r = web.post(f"{b}/api/v1/auth/resident/register", json={
            "phone": PHONE, "code": code.group(1), "name": NAME, "national_id": NID,
            "activation_code": ""})
        assert r.status_code == 201, r.text
        resident = {"Authorization": f"Bearer {r.json()['token']}"}
        assert web.get(f"{a}/api/v1/me", headers=resident).status_code == 200

        # One per-phone SMS limit for the deployment: the sends so far count on both.
        sent = [web.post(f"{node}/api/v1/auth/sms-code", json={"phone": PHONE}).status_code
                for node in (b, a, b)]
        assert sent == [200] * (SENDS_PER_PHONE - 1) + [429], sent

        # Ingest through each process and through the proxy; every door sees it all.
        objects = [to_bytes(make_ct(patient_id="HA-1", patient_name="Zhao^Yangling",
                                    instance_number=i)) for i in range(6)]
        for base, part in zip((a, b, front), (objects[:2], objects[2:4], objects[4:]),
                              strict=True):
            body, content_type = multipart(part)
            stored = web.post(f"{base}/dicomweb/studies", content=body,
                              headers={**feed, "Content-Type": content_type})
            assert stored.status_code == 200, stored.text
        for base in (a, b, front):
            found = web.get(f"{base}/dicomweb/instances", headers=ADMIN,
                            params={"PatientID": "HA-1"})
            assert found.status_code == 200 and len(found.json()) == 6, found.text

    # Both processes append to the audit chain at once (administrator reads and hospital
    # uploads are recorded); the chain's head lock keeps it one chain.
    def busy(base: str, i: int) -> int:
        with httpx.Client(timeout=60) as client:
            if i % 3 == 0:
                body, content_type = multipart([to_bytes(make_ct(
                    patient_id="HA-1", patient_name="Zhao^Yangling", instance_number=100 + i))])
                return client.post(f"{base}/dicomweb/studies", content=body,
                                   headers={**feed, "Content-Type": content_type}).status_code
            return client.get(f"{base}/dicomweb/instances", headers=ADMIN,
                              params={"PatientID": "HA-1"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(busy, [a, b] * 12, range(24)))
    assert set(codes) == {200}, codes
    db = Database(archive["db_url"])
    try:
        report = AuditService(db, address_key=b"unused by verify").verify()
    finally:
        db.dispose()
    assert report.ok, report
    assert report.rows >= 24

    # DIMSE through the stream proxy: each association lands on one of the listeners,
    # which store into the same archive.
    ae = AE(ae_title="HAPACS")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    for i in range(4):
        assoc = ae.associate("127.0.0.1", archive["dimse"], ae_title="CLOUDFILM")
        assert assoc.is_established
        try:
            echo = assoc.send_c_echo()
            kept = assoc.send_c_store(make_ct(patient_id="HA-1", patient_name="Zhao^Yangling",
                                                instance_number=200 + i))
        finally:
            assoc.release()
        assert echo is not None and echo.Status == 0x0000
        assert kept is not None and kept.Status == 0x0000
    with httpx.Client(timeout=60) as web:
        found = web.get(f"{front}/dicomweb/instances", headers=ADMIN,
                        params={"PatientID": "HA-1"})
        assert len(found.json()) == 6 + 8 + 4
