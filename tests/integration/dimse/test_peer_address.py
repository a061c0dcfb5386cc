"""Attack matrix of the DIMSE door's association control (issue 11, finding 3).

The AE title alone is no credential: a title is accepted only from the addresses
registered for it (host, IP, CIDR), and ``require_tls_remote`` demands mutual TLS from
every caller that is not on loopback. Callers are bound to chosen source addresses
(127.0.0.2 is loopback on Linux, like 127.0.0.1, but a different address).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from tests.conftest import settings_to_env
from tests.factories import make_ct, to_bytes
from tests.integration.dimse.support import SCP_AE, require_tool, running_server

from cloudfilm.cli.main import cli
from cloudfilm.config import Settings
from cloudfilm.interfaces.dimse.server import DimseServer, tls_context
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.network.peers import InvalidPeerError

PACS = "HA_PACS"
# rejected-permanent, service-user, calling-AE-title-not-recognised (PS3.8 9.3.4)
NOT_RECOGNISED = (0x01, 0x01, 0x03)


def _associate(port: int, *, source: str = "127.0.0.1", target: str = "127.0.0.1",
               ae_title: str = PACS, tls: tuple[ssl.SSLContext, str] | None = None,
               contexts: tuple[str, ...] = (Verification,)) -> Any:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for cx in contexts:
        ae.add_requested_context(cx)
    kwargs: dict[str, Any] = {"bind_address": (source, 0)}
    if tls is not None:
        kwargs["tls_args"] = tls
    return ae.associate(target, port, ae_title=SCP_AE, **kwargs)


def _rejection(assoc: Any) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    return (rj.result, rj.result_source, rj.diagnostic)


def _find_studies(assoc: Any) -> list[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    found = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
            found.append(str(identifier.StudyInstanceUID))
    return found


@pytest.fixture
def scp(services: Services) -> Iterator[DimseServer]:
    with running_server(services) as server:
        yield server


def _seed_study(services: Services, tmp_path: Path, hospital: str) -> str:
    ds = make_ct()
    path = tmp_path / "seed.dcm"
    path.write_bytes(to_bytes(ds))
    services.ingest.ingest_file(path, sender=Sender(hospital, f"Hospital {hospital}", "test"))
    return str(ds.StudyInstanceUID)


def test_title_registered_elsewhere_is_refused_and_finds_nothing(
        scp: DimseServer, services: Services, tmp_path: Path) -> None:
    # The reported attack: PACS registered at 10.9.9.9, the attacker calls from here.
    services.peers.register(PACS, "10.9.9.9", 104, hospital_code="H-A")
    _seed_study(services, tmp_path, "H-A")
    assoc = _associate(scp.port, contexts=(StudyRootQueryRetrieveInformationModelFind,))
    assert assoc.is_rejected
    assert _rejection(assoc) == NOT_RECOGNISED


def test_registered_host_accepted_other_loopback_address_refused(
        scp: DimseServer, services: Services, tmp_path: Path) -> None:
    services.peers.register(PACS, "127.0.0.1", 104, hospital_code="H-A")
    study = _seed_study(services, tmp_path, "H-A")
    refused = _associate(scp.port, source="127.0.0.2",
                         contexts=(StudyRootQueryRetrieveInformationModelFind,))
    assert refused.is_rejected and _rejection(refused) == NOT_RECOGNISED
    accepted = _associate(scp.port, contexts=(StudyRootQueryRetrieveInformationModelFind,))
    assert accepted.is_established
    try:
        assert _find_studies(accepted) == [study]
    finally:
        accepted.release()


@pytest.mark.parametrize(("rule", "source", "admitted"), [
    ("127.0.0.0/30", "127.0.0.2", True),
    ("127.0.0.1/32", "127.0.0.2", False),
    ("127.0.0.2", "127.0.0.2", True),
    ("10.0.0.0/8, 127.0.0.2", "127.0.0.2", True),
    ("10.0.0.0/8, 127.0.0.2", "127.0.0.1", False),
    ("localhost", "127.0.0.1", True),
    ("localhost", "127.0.0.2", False),
])
def test_allowed_from_rules(scp: DimseServer, services: Services, rule: str, source: str,
                            admitted: bool) -> None:
    # The C-MOVE host (10.9.9.9) is not where calls may come from; allowed_from is.
    services.peers.register(PACS, "10.9.9.9", 104, hospital_code="H-A", allowed_from=rule)
    assoc = _associate(scp.port, source=source)
    assert assoc.is_established is admitted
    if admitted:
        assoc.release()


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not a host!", "10.0.0.1/8/1", "a" * 300])
def test_invalid_address_rules_are_refused(services: Services, bad: str) -> None:
    with pytest.raises(InvalidPeerError):
        services.peers.register(PACS, "127.0.0.1", 104, hospital_code="H-A", allowed_from=bad)
    with pytest.raises(InvalidPeerError):
        services.peers.register(PACS, "10.0.0.0/24", 104, hospital_code="H-A")


def test_cli_peers_add_accepts_a_network(services: Services, settings: Settings,
                                         db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_to_env(monkeypatch, settings, db_url)
    result = CliRunner().invoke(cli, ["peers", "add", PACS, "10.1.2.3", "104", "--hospital",
                                      "H-A", "--allow-from", "10.8.0.0/24,10.1.2.3"])
    assert result.exit_code == 0, result.output
    peer = services.peers.lookup(PACS)
    assert peer is not None and peer.address_rules == ["10.8.0.0/24", "10.1.2.3"]
    assert services.peers.calls_from(peer, "10.8.0.77")
    assert not services.peers.calls_from(peer, "10.8.1.77")
    listing = CliRunner().invoke(cli, ["peers", "list"])
    assert "10.8.0.0/24" in listing.output


@pytest.mark.interop
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_dcmtk_accepted_only_from_the_registered_address(scp: DimseServer,
                                                         services: Services) -> None:
    # dcmtk cannot choose its source address, so it calls from 127.0.0.1: accepted for
    # the title registered at 127.0.0.1, refused for the one registered at 127.0.0.2.
    services.peers.register("DCMTK_HERE", "127.0.0.1", 104, hospital_code="H-A")
    services.peers.register("DCMTK_ELSEWHERE", "127.0.0.2", 104, hospital_code="H-A")
    echoscu, findscu = require_tool("echoscu"), require_tool("findscu")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    ok = run(echoscu, "-aet", "DCMTK_HERE", "-aec", SCP_AE, "127.0.0.1", str(scp.port))
    assert ok.returncode == 0, ok.stderr
    for tool in (echoscu, findscu):
        extra = ["-S", "-k", "QueryRetrieveLevel=STUDY"] if tool == findscu else []
        refused = run(tool, "-aet", "DCMTK_ELSEWHERE", "-aec", SCP_AE, *extra, "127.0.0.1",
                      str(scp.port))
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr
    # and a pynetdicom caller bound to 127.0.0.2 is accepted for the 127.0.0.2 title
    assoc = _associate(scp.port, source="127.0.0.2", ae_title="DCMTK_ELSEWHERE")
    assert assoc.is_established
    assoc.release()


# -- mutual TLS for callers not on loopback --------------------------------------------


def _non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = str(s.getsockname()[0])
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address")
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def _certificates(folder: Path, address: str) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def key_pair(name: str) -> Any:
        key = ec.generate_private_key(ec.SECP256R1())
        (folder / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return key

    def issue(name: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.subject if issuer is not None else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                  critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert

    ca_key = key_pair("ca")
    ca = issue("ca", ca_key, None, None, ca=True)
    issue("server", key_pair("server"), ca, ca_key, ca=False)
    issue("client", key_pair("client"), ca, ca_key, ca=False)
    rogue_key = key_pair("rogue")
    issue("rogue", rogue_key, None, None, ca=False)  # self-signed: not from our CA
    return {n: folder / n for n in ("ca", "server", "client", "rogue")}


def _client_tls(files: dict[str, Path], who: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(files["ca"]) + ".pem")
    context.load_cert_chain(str(files[who]) + ".pem", str(files[who]) + ".key")
    return context


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_remote_callers_need_mutual_tls(services: Services, tmp_path: Path) -> None:
    address = _non_loopback_address()
    files = _certificates(tmp_path, address)
    server_tls = tls_context(Path(str(files["server"]) + ".pem"),
                             Path(str(files["server"]) + ".key"),
                             Path(str(files["ca"]) + ".pem"))
    services.peers.register(PACS, address, 104, hospital_code="H-A",
                            allowed_from=f"{address}, 127.0.0.1")
    server = DimseServer(services, ae_title=SCP_AE, host="0.0.0.0", port=0, timeout=10,
                         ssl_context=server_tls, tls_port=0, require_tls_remote=True)
    server.start()
    stall: socket.socket | None = None
    try:
        assert server.tls_port and server.tls_port != server.port
        # A caller that opens TCP on the TLS port and never speaks stalls nobody else.
        stall = socket.create_connection((address, server.tls_port), timeout=5)
        # plain TCP from the registered remote address: refused
        plain = _associate(server.port, source=address, target=address)
        assert plain.is_rejected and _rejection(plain) == NOT_RECOGNISED
        # plain TCP from loopback: still fine (local tools, dcmtk)
        local = _associate(server.port)
        assert local.is_established
        local.release()
        # TLS with a certificate of our CA from the registered address: accepted
        good = _associate(server.tls_port, source=address, target=address,
                          tls=(_client_tls(files, "client"), address),
                          contexts=(Verification, CTImageStorage))
        assert good.is_established
        assert good.send_c_echo().Status == 0
        # a C-STORE's data set is read from the TLS socket as from a plain one
        ct = make_ct(size=256)
        assert good.send_c_store(ct).Status == 0
        good.release()
        assert services.retrieve.locate(ct.StudyInstanceUID, actor=LOCAL_OPERATOR)
        # a certificate of another CA never gets past the handshake
        rogue = _associate(server.tls_port, source=address, target=address,
                           tls=(_client_tls(files, "rogue"), address))
        assert not rogue.is_established
        # the right certificate from an address not registered for the title: refused
        other = _associate(server.tls_port, source="127.0.0.2", target=address,
                           tls=(_client_tls(files, "client"), address))
        assert other.is_rejected
    finally:
        if stall is not None:
            stall.close()
        server.stop(grace=2)


def test_require_tls_remote_without_mutual_tls_is_a_config_error(settings: Settings,
                                                                   services: Services) -> None:
    from cloudfilm.app import build_dimse_server
    from cloudfilm.config import ConfigError

    strict = settings.model_copy(update={"dimse": settings.dimse.model_copy(
        update={"require_tls_remote": True})})
    with pytest.raises(ConfigError, match="REQUIRE_TLS_REMOTE"):
        build_dimse_server(services, strict)
