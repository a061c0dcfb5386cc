"""The C-MOVE sub-association's reactor cannot take a C-STORE response meant for the sender."""

from __future__ import annotations

from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider

from cloudfilm.interfaces.dimse.sending import SubOperationDIMSE, guard_suboperations


def _reactor_get(assoc: Association, provider: DIMSEServiceProvider) -> Any:
    """What ``get_msg(block=False)`` returns in the association's own thread (where
    pynetdicom's reactor runs)."""
    seen: list[Any] = []
    assoc.run = lambda: seen.append(provider.get_msg(block=False))  # type: ignore[method-assign]
    assoc.start()
    assoc.join(timeout=5)
    return seen[0]


@pytest.mark.parametrize("guarded", [False, True])
def test_only_the_sender_receives_the_response(guarded: bool) -> None:
    assoc = Association(AE(), "requestor")
    if guarded:
        guard_suboperations(assoc)
        assert isinstance(assoc.dimse, SubOperationDIMSE)
    response = object()
    assoc.dimse.msg_queue.put((1, response))  # type: ignore[arg-type]
    taken = _reactor_get(assoc, assoc.dimse)
    if not guarded:  # pynetdicom's own provider hands it to the reactor: the race
        assert taken == (1, response)
        return
    assert taken == (None, None)
    assoc.dimse_timeout = 1
    assert assoc.dimse.get_msg(block=True) == (1, response)  # the sender's call


@pytest.mark.parametrize("ours", [False, True])
def test_a_sub_association_reactor_leaves_the_sender_free(ours: bool) -> None:
    import threading
    import time

    from cloudfilm.interfaces.dimse.sending import FileSendingAssociation, enable

    assoc = Association(AE(), "requestor")
    if ours:
        guard_suboperations(assoc)
        assert enable(assoc) and isinstance(assoc, FileSendingAssociation)
    assoc.dul.is_alive = lambda: True  # type: ignore[method-assign]  # a live DUL
    reactor = threading.Thread(target=assoc._run_reactor)
    reactor.start()
    try:
        # send_c_store waits for _is_paused before every sub-operation
        time.sleep(0.02)
        seen = []
        for _ in range(100):
            seen.append(assoc._is_paused)
            time.sleep(0.0005)
    finally:
        assoc._kill = True
        reactor.join(timeout=5)
    assert not reactor.is_alive()
    if ours:
        assert all(seen)
    else:  # pynetdicom's reactor is unpaused while it sleeps: the sender waits for it
        assert not all(seen)
