"""Registry of hospitals' DICOM application entities (AE title, host, port, hospital).

The DIMSE door accepts an association only from a registered calling AE title calling from
one of its registered addresses (:meth:`PeerService.admit`: ``allowed_from``, host names,
IPs or CIDRs, or else the registered host), records
every object it receives for the peer's hospital, and sends C-MOVE sub-operations to a
registered destination's host and port. Changes commit when the call returns; the
listener reads the registry per association, so a peer added by ``cloudfilm peers add`` in
another process is accepted at its next association.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import peer_repository as repo
from cloudfilm.infrastructure.db.models import DicomPeer
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.errors import (
    CloudfilmError,
    NotFoundError,
    ResourceUnavailableError,
)

# PS3.5 Table 6.2-1, AE: 16 characters of the default repertoire, no backslash or controls.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class InvalidPeerError(CloudfilmError):
    """A peer's AE title, host or port is not acceptable."""

    code = "invalid-peer"


class PeerExistsError(CloudfilmError):
    code = "peer-exists"


@dataclass(frozen=True, slots=True)
class Peer:
    ae_title: str
    host: str
    port: int
    hospital_code: str
    description: str
    created_at: datetime
    # Where the AE may call from: host names, IPs or CIDRs, comma-separated ("" = host).
    allowed_from: str = ""

    @property
    def address_rules(self) -> list[str]:
        return _split_rules(self.allowed_from or self.host)


# Host names are resolved per association; a short cache keeps a DNS round trip off most
# associations while a changed address is picked up within a minute.
_RESOLVE_TTL = 60.0

Resolver = Callable[[str], list[str]]
# ``PeerService.list`` hides the builtin inside the class body.
_Addresses = list[str]


def _resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


class PeerService:
    def __init__(self, db: Database, *, resolve: Resolver = _resolve) -> None:
        self._db = db
        self._resolve = resolve
        self._resolved: dict[str, tuple[float, _Addresses]] = {}
        self._lock = threading.Lock()

    def register(self, ae_title: str, host: str, port: int, *, hospital_code: str,
                 description: str = "", allowed_from: str = "") -> Peer:
        """Register a peer; committed when this returns.

        ``allowed_from`` lists where the AE may call from (host names, IPs or CIDRs such as
        ``10.8.0.0/24``, comma-separated); empty means the registered ``host`` only.

        Raises
        ------
        InvalidPeerError
            The AE title is not 1-16 default-repertoire characters, the host is not a host
            name or IP, an ``allowed_from`` entry is not a host name, IP or CIDR, the port
            is not 1-65535 or the hospital code is empty.
        PeerExistsError
            The AE title is already registered (remove it first to change it).
        ResourceUnavailableError
        """
        title = normalise_ae_title(ae_title)
        host = host.strip()
        if not host or len(host) > 255 or not _valid_host(host):
            raise InvalidPeerError(f"the peer's host {host!r} must be a host name or IP "
                                   "address (a network goes into allowed_from)")
        rules = ", ".join(_valid_rule(r) for r in _split_rules(allowed_from))
        if len(rules) > 255:
            raise InvalidPeerError("allowed_from is longer than 255 characters")
        if not 1 <= int(port) <= 65535:
            raise InvalidPeerError(f"port {port} is not a TCP port (1-65535)")
        code = hospital_code.strip()
        if not code or len(code) > 64:
            raise InvalidPeerError("the peer needs a hospital code of 1 to 64 characters")
        values = {"ae_title": title, "host": host, "port": int(port), "hospital_code": code,
                  "description": description[:256], "created_at": datetime.now(UTC),
                  "allowed_from": rules}
        try:
            with self._db.write() as session:
                if repo.by_ae_title(session, title) is not None:
                    raise PeerExistsError(f"AE title {title!r} is already registered; "
                                          f"remove it first to change its address")
                row = repo.add(session, values)
                peer = _peer(row)
        except IntegrityError:
            raise PeerExistsError(f"AE title {title!r} is already registered") from None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return peer

    def list(self) -> list[Peer]:
        try:
            with self._db.read() as session:
                return [_peer(row) for row in repo.all_peers(session)]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def remove(self, ae_title: str) -> None:
        """Remove a peer; committed when this returns.

        Raises
        ------
        NotFoundError
            No peer has this AE title.
        """
        title = normalise_ae_title(ae_title)
        try:
            with self._db.write() as session:
                removed = repo.remove(session, title)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not removed:
            raise NotFoundError(f"no DICOM peer has the AE title {title!r}")

    def admit(self, ae_title: str, address: str) -> Peer | None:
        """The peer with this calling AE title if ``address`` is one it may call from.

        Raises
        ------
        ResourceUnavailableError
            The registry cannot be read (the caller must not treat this as "unknown").
        """
        peer = self.lookup(ae_title)
        if peer is None or not self.calls_from(peer, address):
            return None
        return peer

    def calls_from(self, peer: Peer, address: str) -> bool:
        """Whether ``address`` (the TCP peer's IP) matches one of the peer's rules."""
        try:
            caller = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(caller, ipaddress.IPv6Address) and caller.ipv4_mapped is not None:
            caller = caller.ipv4_mapped
        for rule in peer.address_rules:
            network = _network(rule)
            if network is not None:
                if caller.version == network.version and caller in network:
                    return True
                continue
            if any(_same_ip(caller, ip) for ip in self._addresses_of(rule)):
                return True
        return False

    def _addresses_of(self, host: str) -> _Addresses:
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._resolve(host)
        with self._lock:
            self._resolved[host] = (now + _RESOLVE_TTL, found)
        return found

    def lookup(self, ae_title: str) -> Peer | None:
        """The registered peer with this AE title, or None.

        Raises
        ------
        ResourceUnavailableError
            The registry cannot be read (the caller must not treat this as "unknown").
        """
        title = ae_title.strip()
        try:
            with self._db.read() as session:
                row = repo.by_ae_title(session, title)
                return _peer(row) if row is not None else None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc


def normalise_ae_title(ae_title: str) -> str:
    """Strip the padding spaces an AE title may carry; raise InvalidPeerError if invalid.

    AE titles compare case-sensitively (PS3.5 6.2), so the case is kept.
    """
    title = ae_title.strip()
    if not _AE_TITLE.match(title):
        raise InvalidPeerError(
            f"AE title {ae_title!r} is not valid: 1 to 16 printable ASCII characters, no "
            "backslash (PS3.5 Table 6.2-1)"
        )
    return title


def _split_rules(text: str) -> list[str]:
    return [r for r in re.split(r"[,\s]+", text.strip()) if r]


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_NAME.match(host))


def _network(rule: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(rule, strict=False)
    except ValueError:
        return None


def _valid_rule(rule: str) -> str:
    network = _network(rule)
    if network is not None:
        return str(network) if "/" in rule else rule
    if _valid_host(rule):
        return rule
    raise InvalidPeerError(f"{rule!r} is not a host name, IP address or network (CIDR such "
                           "as 10.8.0.0/24)")


def _same_ip(caller: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip == caller


def _peer(row: DicomPeer) -> Peer:
    return Peer(row.ae_title, row.host, row.port, row.hospital_code, row.description,
                row.created_at, row.allowed_from)
