"""The gateway forwards over mutual TLS, and the cloud's TLS terminator refuses a gateway
without a client certificate from the right CA.

The real cloud app runs in-process behind uvicorn with ``ssl_cert_reqs=CERT_REQUIRED``; the
gateway's real Forwarder (forward.py's httpx client built from ``[cloud] ca_file``,
``client_certificate``, ``client_key``) sends a small queue to it. A refused handshake is a
link problem, so the objects must stay queued for a retry, never parked as refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text
from tests.factories import to_bytes
from tests.integration.dimse.support import dataset_sha256
from tests.integration.gateway import rig
from tests.integration.identity.test_identity import _register

from cloudfilm.config import Settings
from cloudfilm.gateway.config import CloudConfig, ForwardConfig
from cloudfilm.gateway.forward import Forwarder
from cloudfilm.gateway.queue import Meta, Queue
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
              pytest.mark.xdist_group("gateway")]

HOSPITAL = "H-MTLS"


def _certificates(folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (certificate, key) PEM files: two CAs; a server certificate for
    127.0.0.1/localhost and a client certificate from ``ca``; a client and a server
    certificate from ``other``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    made: dict[str, tuple[Path, Path]] = {}
    keys: dict[str, Any] = {}
    certs: dict[str, Any] = {}

    def issue(name: str, issuer: str | None, usage: Any = None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(certs[issuer].subject if issuer else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                                  critical=True))
        if issuer is None:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(keys[issuer] if issuer else key, hashes.SHA256())
        keys[name], certs[name] = key, cert
        pem, key_file = folder / f"{name}.pem", folder / f"{name}.key"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        made[name] = (pem, key_file)

    issue("ca", None)
    issue("other-ca", None)
    issue("server", "ca", ExtendedKeyUsageOID.SERVER_AUTH)
    issue("client", "ca", ExtendedKeyUsageOID.CLIENT_AUTH)
    issue("stranger", "other-ca", ExtendedKeyUsageOID.CLIENT_AUTH)
    issue("impostor", "other-ca", ExtendedKeyUsageOID.SERVER_AUTH)
    return made


@dataclass(slots=True)
class Cloud:
    url: str
    credential: str
    files: dict[str, tuple[Path, Path]]
    server: uvicorn.Server


def _serve(services: Services, files: dict[str, tuple[Path, Path]], server_cert: str
           ) -> tuple[uvicorn.Server, threading.Thread, int]:
    """The cloud app over HTTPS on a free loopback port, client certificates required."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(services), host="127.0.0.1", port=port, log_level="warning",
        ssl_certfile=str(files[server_cert][0]), ssl_keyfile=str(files[server_cert][1]),
        ssl_ca_certs=str(files["ca"][0]), ssl_cert_reqs=ssl.CERT_REQUIRED,
        timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="mtls-cloud")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the HTTPS cloud did not start")
        time.sleep(0.02)
    return server, thread, port


@pytest.fixture
def cloud(services: Services, settings: Settings, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Cloud]:
    folder = tmp_path / "pki"
    folder.mkdir()
    files = _certificates(folder)
    _register(services, HOSPITAL)
    credential = services.credentials.issue(HOSPITAL).token
    server_cert = getattr(request, "param", "server")
    server, thread, port = _serve(services, files, server_cert)
    try:
        yield Cloud(f"https://127.0.0.1:{port}", credential, files, server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the HTTPS cloud did not stop"


def _queue(folder: Path, count: int = 3) -> tuple[Queue, dict[str, bytes]]:
    queue = Queue(folder, quota_bytes=16 * 1024 * 1024)
    sent: dict[str, bytes] = {}
    for ds in rig.studies("GW-MTLS", 1, count, size=32):
        data = to_bytes(ds)
        queue.commit(queue.spool(data), Meta("dicom", str(ds.SOPInstanceUID),
                                             str(ds.StudyInstanceUID), source="PACS"))
        sent[str(ds.SOPInstanceUID)] = data
    return queue, sent


def _forward(cloud: Cloud, queue: Queue, *, ca: str, client: str | None,
             until: str, timeout: float = 10.0) -> Forwarder:
    """Run the real Forwarder until every object is sent (``until="sent"``) or one attempt
    failed (``until="error"``), then stop it."""
    cloud_config = CloudConfig(
        url=cloud.url, credential=cloud.credential, timeout=5.0,
        ca_file=cloud.files[ca][0],
        client_certificate=cloud.files[client][0] if client else None,
        client_key=cloud.files[client][1] if client else None)
    # A long backoff: one failed attempt per object is enough to judge.
    forwarder = Forwarder(queue, cloud_config, ForwardConfig(
        concurrency=1, retry_initial_seconds=60, retry_max_seconds=60))
    forwarder.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            states = [r[0] for r in queue.execute("SELECT state FROM item")]
            if until == "sent" and set(states) == {"sent"}:
                break
            if until == "error" and forwarder.last_error:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"forwarding did not reach {until!r} in {timeout} s: "
                        f"{queue.execute('SELECT state, last_error FROM item')}")
    finally:
        forwarder.stop(timeout=10)
    return forwarder


def _arrived(settings: Settings) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the data set the cloud stored."""
    engine = create_engine(str(settings.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT sop_instance_uid, blob_key FROM instance")).all()
    finally:
        engine.dispose()
    return {sop: dataset_sha256(settings.data_dir / "blobs" / key) for sop, key in rows}


def test_forwards_over_mutual_tls(cloud: Cloud, settings: Settings, tmp_path: Path) -> None:
    queue, sent = _queue(tmp_path / "queue")
    try:
        forwarder = _forward(cloud, queue, ca="ca", client="client", until="sent")
        assert forwarder.last_error == ""
    finally:
        queue.close()
    arrived = _arrived(settings)
    assert arrived == {sop: dataset_sha256(data) for sop, data in sent.items()}


@pytest.mark.parametrize("client", ["stranger", None])
def test_the_cloud_refuses_a_gateway_without_the_right_client_certificate(
        cloud: Cloud, settings: Settings, tmp_path: Path, client: str | None) -> None:
    queue, sent = _queue(tmp_path / "queue")
    try:
        forwarder = _forward(cloud, queue, ca="ca", client=client, until="error")
        rows = queue.execute("SELECT uid, state, attempts, last_error FROM item")
    finally:
        queue.close()
    assert "cannot reach the cloud" in forwarder.last_error, forwarder.last_error
    # Queued for a retry (a certificate can be fixed), not parked as refused.
    assert {r[0] for r in rows} == set(sent)
    assert {(r[1], r[2]) for r in rows} == {("received", 1)}, rows
    assert _arrived(settings) == {}


@pytest.mark.parametrize("cloud", ["impostor"], indirect=True)
def test_the_gateway_sends_nothing_to_a_server_it_does_not_trust(
        cloud: Cloud, settings: Settings, tmp_path: Path) -> None:
    # The server's certificate comes from another CA than the gateway's bundle: the
    # gateway stops at the handshake, before its credential or any object leaves it.
    queue, sent = _queue(tmp_path / "queue")
    try:
        forwarder = _forward(cloud, queue, ca="ca", client="client", until="error")
        rows = queue.execute("SELECT state, attempts FROM item")
    finally:
        queue.close()
    assert "CERTIFICATE_VERIFY_FAILED" in forwarder.last_error, forwarder.last_error
    assert set(rows) == {("received", 1)} and len(rows) == len(sent)
    assert _arrived(settings) == {}
