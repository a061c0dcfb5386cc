"""The DIMSE listener: Verification, Storage and Query/Retrieve SCP on one AE title.

Association control: only calling AE titles in the peer registry are accepted, and only
from an address registered for that title (host, IP or CIDR); with ``require_tls_remote``
a caller that is not on loopback must also have come over mutual TLS. Others get
A-ASSOCIATE-RJ "calling AE title not recognised" (PS3.8 9.3.4, result 1, source 1, reason
3): the answer does not tell a prober whether the title or the address was wrong.
Unsupported presentation contexts are rejected one by one by pynetdicom's negotiation
(abstract or transfer syntax not supported, PS3.8 9.3.3.2).

Shutdown: the listening socket closes first (new connections are refused), associations in
flight get a grace period to finish, and those still open are then aborted. A C-STORE is
answered Success only after the instance is durable, so an abort loses nothing that was
acknowledged; the sender resends what it did not see acknowledged.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.uid import (
    JPEG2000,
    JPEG2000MC,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
)
from pynetdicom.transport import ThreadedAssociationServer

from cloudfilm.interfaces.dimse import handlers
from cloudfilm.interfaces.dimse import metrics as dimse_metrics
from cloudfilm.interfaces.dimse.transport import (
    ReusePortServer,
    SharedPortServer,
    TunedRequestHandler,
)
from cloudfilm.services.container import Services
from cloudfilm.services.errors import ResourceUnavailableError
from cloudfilm.services.network.peers import PeerService

logger = logging.getLogger(__name__)


def _htj2k_syntaxes() -> list[str]:
    import pydicom.uid as uids

    names = ("HTJ2KLossless", "HTJ2KLosslessRPCL", "HTJ2K")
    return [str(getattr(uids, n)) for n in names if hasattr(uids, n)]


# The syntaxes hospitals send (PS3.5 Annex A); HTJ2K where this pydicom defines it.
# pynetdicom accepts the first of OUR syntaxes that a proposed context lists, so the order
# is a preference: compressed first, because a sender that offers [JPEG, Explicit VR LE] in
# one context (dcmtk storescu does) holds the JPEG and may be unable to decompress it, and
# we store objects as sent. Lossless before lossy; uncompressed last.
STORAGE_TRANSFER_SYNTAXES: list[str] = [
    str(uid) for uid in (
        JPEGLSLossless, JPEG2000Lossless, JPEG2000MCLossless, JPEGLosslessSV1, JPEGLossless,
        RLELossless,
    )
] + _htj2k_syntaxes() + [
    str(uid) for uid in (
        JPEGLSNearLossless, JPEG2000, JPEG2000MC, JPEGBaseline8Bit, JPEGExtended12Bit,
        DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    )
]

# Patient Root and Study Root FIND, MOVE, GET (PS3.4 C.6.1.3, C.6.2.3).
_QUERY_RETRIEVE = (
    "1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3",
)
# Matches no AE title (titles have no control characters): "nobody is registered".
_NOBODY = "\x00"


class RegistryAE(AE):
    """An AE that accepts a calling AE title only from the addresses registered for it.

    pynetdicom compares the calling AE title with ``require_calling_aet`` during
    negotiation, in the association's own thread, after it has set the requestor's AE title
    and address (``acse._negotiate_as_acceptor``). Reading the registry there (one indexed
    query per association) makes a peer registered by another process acceptable at its
    next association, and the thread tells us who is asking: the answer is the calling
    title when that title may call from that address, else a title nobody has.
    """

    def __init__(self, ae_title: str, peers: PeerService, *,
                 require_tls_remote: bool = False) -> None:
        super().__init__(ae_title=ae_title)
        self._registry = peers
        self._require_tls_remote = require_tls_remote

    @property  # type: ignore[misc]
    def require_calling_aet(self) -> list[str]:
        assoc = threading.current_thread()
        if not isinstance(assoc, Association) or not assoc.is_acceptor:
            return [_NOBODY]
        # pynetdicom reads the property twice per negotiation: decide once per association.
        decided: list[str] | None = getattr(assoc, "_cloudfilm_admitted", None)
        if decided is None:
            decided = self._admit(assoc)
            assoc._cloudfilm_admitted = decided  # type: ignore[attr-defined]
        return decided

    def _admit(self, assoc: Association) -> list[str]:
        title = str(assoc.requestor.ae_title or "").strip()
        address = str(assoc.requestor.address or "")
        if self._require_tls_remote and not _is_loopback(address) and not _over_tls(assoc):
            logger.warning("cloudfilm.dimse.refused_plain_remote",
                           extra={"calling_ae": title})
            return [_NOBODY]
        try:
            peer = self._registry.admit(title, address)
        except ResourceUnavailableError:
            logger.error("cloudfilm.dimse.peer_registry_unavailable")
            return [_NOBODY]
        if peer is None:
            return [_NOBODY]
        return [peer.ae_title]


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _over_tls(assoc: Association) -> bool:
    # The TLS listener's context has CERT_REQUIRED: a TLS socket here holds a verified
    # client certificate (the handshake fails otherwise).
    sock = getattr(assoc.dul.socket, "socket", None) if assoc.dul.socket else None
    return isinstance(sock, ssl.SSLSocket) and sock.getpeercert() is not None


class DimseServer:
    """One listening AE: build it from :class:`Services`, :meth:`start`, :meth:`stop`."""

    def __init__(
        self,
        services: Services,
        *,
        ae_title: str,
        host: str = "127.0.0.1",
        port: int = 11112,
        max_pdu: int = 4 * 1024 * 1024,
        max_associations: int = 16,
        timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        tls_port: int | None = None,
        require_tls_remote: bool = False,
        reuse_port: bool = False,
    ) -> None:
        """``ssl_context`` alone: the listener on ``port`` speaks TLS. With ``tls_port``
        too: ``port`` stays plain (loopback tools, dcmtk) and TLS listens on ``tls_port``.
        ``require_tls_remote``: callers not on loopback must come over TLS.
        ``reuse_port``: bind with SO_REUSEPORT, so that sibling listener processes share
        the port (the kernel spreads new associations over them)."""
        self._reuse_port = reuse_port
        self.services = services
        self.ae_title = ae_title
        self.host = host
        self._port = port
        self._ssl_context = ssl_context
        self._tls_port = tls_port if ssl_context is not None else None
        self.gateway = handlers.Gateway(services, ae_title, max_pdu, timeout)
        self.ae = _build_ae(services.peers, ae_title, max_pdu, max_associations, timeout,
                            require_tls_remote=require_tls_remote)
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        self._stopped = threading.Event()
        # Sibling listener processes on the same port (siblings.py), stopped with us.
        self.siblings: Any = None

    @property
    def port(self) -> int:
        """The bound port (differs from the configured one when that was 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The bound port of the separate TLS listener, if there is one."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])
        return self._tls_port

    @property
    def active_associations(self) -> list[Any]:
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        return [a for s in servers for a in s.active_associations]

    def start(self) -> None:
        gw = self.gateway
        evt_handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, handlers.set_nodelay),
            (evt.EVT_CONN_CLOSE, handlers.discard_partial_dataset),
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.handle_store, [gw]),
            (evt.EVT_C_FIND, handlers.handle_find, [gw]),
            (evt.EVT_C_MOVE, handlers.handle_move, [gw]),
            (evt.EVT_C_GET, handlers.handle_get, [gw]),
            (evt.EVT_ACCEPTED, handlers.on_accepted, [gw]),
            (evt.EVT_REJECTED, handlers.on_rejected),
            (evt.EVT_ABORTED, handlers.on_aborted),
        ]
        tls_port = self._tls_port
        self._server = self._listen(
            self._port, evt_handlers, None if tls_port is not None else self._ssl_context)
        if tls_port is not None:
            self._tls_server = self._listen(tls_port, evt_handlers, self._ssl_context)
        dimse_metrics.watch(self)
        logger.info("cloudfilm.dimse.listening", extra={
            "ae_title": self.ae_title, "host": self.host, "port": self.port,
            "tls": self._ssl_context is not None, "tls_port": self.tls_port})

    def _listen(self, port: int, evt_handlers: list[Any],
                ssl_context: ssl.SSLContext | None) -> ThreadedAssociationServer:
        """``AE.start_server(block=False)`` with our server class and request handler
        (transport.py: event-driven reactors; a shared port with ``reuse_port``)."""
        server_class = SharedPortServer if self._reuse_port else ReusePortServer
        server = self.ae.make_server(
            (self.host, port), evt_handlers=evt_handlers, ssl_context=ssl_context,
            server_class=server_class, request_handler=TunedRequestHandler)
        if isinstance(server, ReusePortServer):  # received data sets land beside the blobs
            server.spool_dir = self.services.spool_dir
        threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{port}",
                         daemon=True).start()
        return server

    def stop(self, grace: float = 30.0) -> None:
        """Refuse new associations, let open ones finish for ``grace`` s, abort the rest."""
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        self._server = self._tls_server = None
        dimse_metrics.forget(self)
        siblings, self.siblings = self.siblings, None
        if siblings is not None:
            siblings.terminate()  # their grace runs alongside ours
        if not servers:
            if siblings is not None:
                siblings.wait(grace)
            return
        assocs = [a for s in servers for a in s.active_associations]
        for server in servers:
            server.shutdown()  # stops accepting and closes the listening socket
        deadline = time.monotonic() + grace
        for assoc in assocs:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [a for a in assocs if a.is_alive()]
        for assoc in left:
            assoc.abort()
        if siblings is not None:
            siblings.wait(max(0.0, deadline - time.monotonic()))
        logger.info("cloudfilm.dimse.stopped", extra={"aborted": len(left)})
        self._stopped.set()

    def wait(self) -> None:
        """Block until :meth:`stop` has run (for ``cloudfilm dimse``)."""
        while not self._stopped.wait(0.5):
            pass


def _build_ae(peers: PeerService, ae_title: str, max_pdu: int, max_associations: int,
              timeout: float, *, require_tls_remote: bool = False) -> RegistryAE:
    ae = RegistryAE(ae_title, peers, require_tls_remote=require_tls_remote)
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = max_associations
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    for cx in AllStoragePresentationContexts:
        # Both roles: we are Storage SCP for C-STORE and Storage SCU inside C-GET.
        ae.add_supported_context(str(cx.abstract_syntax), STORAGE_TRANSFER_SYNTAXES,
                                 scu_role=True, scp_role=True)
    for cx in VerificationPresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), [ExplicitVRLittleEndian,
                                                      ImplicitVRLittleEndian])
    for sop_class in _QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                             DeflatedExplicitVRLittleEndian])
    return ae


class _DeferredHandshakeContext(ssl.SSLContext):
    """Handshake in the association's thread, not in the accept loop.

    pynetdicom wraps each accepted socket in its single listening thread
    (``AssociationServer.get_request``); with the default handshake-on-connect one client
    that opens TCP and sends nothing stalls every other TLS caller. Deferred, OpenSSL runs
    the handshake inside the first read, in the association's thread, under its timeouts.
    """

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def tls_context(certificate: Path, private_key: Path,
                ca_certificates: Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context for DICOM TLS (PS3.15 B.1); CA given -> mutual TLS."""
    context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(certificate), keyfile=str(private_key))
    if ca_certificates is not None:
        context.load_verify_locations(cafile=str(ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def supported_transfer_syntaxes() -> Sequence[str]:
    return tuple(STORAGE_TRANSFER_SYNTAXES)
