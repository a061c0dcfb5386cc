"""The verification cache of hospital credentials (services/identity/credentials.py)."""

from __future__ import annotations

from cloudfilm.services.identity.credentials import CredentialCache, HospitalIdentity

HA = HospitalIdentity(1, "HA", "Hospital A")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_serves_until_its_lifetime_ends_then_never() -> None:
    clock = Clock()
    cache = CredentialCache(5.0, clock=clock)
    cache.put("h1", HA, cache.generation)
    clock.now += 4.9
    assert cache.get("h1") == HA
    clock.now += 0.1
    assert cache.get("h1") is None
    clock.now -= 1.0  # an expired entry is gone, not hidden: no clock trick revives it
    assert cache.get("h1") is None


def test_only_the_same_hash_hits() -> None:
    cache = CredentialCache(5.0)
    cache.put("h1", HA, cache.generation)
    assert cache.get("h2") is None
    assert cache.get("h1"[:1]) is None


def test_a_look_up_that_began_before_a_revocation_is_not_stored() -> None:
    cache = CredentialCache(5.0)
    generation = cache.generation  # the look-up starts and reads a live row ...
    cache.forget_all()  # ... while another thread revokes it and forgets
    cache.put("h1", HA, generation)
    assert cache.get("h1") is None
    cache.put("h1", HA, cache.generation)  # a look-up after the revocation is stored
    assert cache.get("h1") == HA


def test_forget_all_drops_every_entry() -> None:
    cache = CredentialCache(5.0)
    cache.put("h1", HA, cache.generation)
    cache.put("h2", HA, cache.generation)
    cache.forget_all()
    assert cache.get("h1") is None and cache.get("h2") is None


def test_zero_seconds_turns_it_off() -> None:
    cache = CredentialCache(0.0)
    cache.put("h1", HA, cache.generation)
    assert cache.get("h1") is None


def test_the_oldest_entry_goes_when_full() -> None:
    cache = CredentialCache(5.0, max_entries=2)
    for key in ("h1", "h2", "h3"):
        cache.put(key, HA, cache.generation)
    assert cache.get("h1") is None
    assert cache.get("h2") == HA and cache.get("h3") == HA
