"""Transaction ids that name their owner: signed, unforgeable, and routed
only to known peers (the routing rules, with real name resolution)."""

from __future__ import annotations

import pytest

from dbgateway_server.cluster import Forwarding, Owner, TransactionIds
from dbgateway_server.errors import GatewayError, Reason

SECRET = "0123456789abcdef-secret"


def test_an_id_names_its_owner_and_only_the_secret_can_sign_one():
    ids = TransactionIds(SECRET, Owner("10.0.0.1:50051", 2))
    tx = ids.new()
    assert ids.owner_of(tx) == Owner("10.0.0.1:50051", 2)
    assert TransactionIds("another-secret-entirely", Owner()).owner_of(tx) is None
    assert ids.new() != tx
    random_part, owner_part, signature = tx.split(".")
    assert len(random_part) == 32  # 192 random bits
    forged = TransactionIds("another-secret-entirely", Owner("10.9.9.9:1")).new()
    assert ids.owner_of(forged) is None
    assert ids.owner_of(f"{random_part}.{owner_part}.{signature[:-1]}A") is None
    assert ids.owner_of("not-an-id") is None
    assert ids.owner_of("") is None


def test_the_forwarded_header_is_signed_per_transaction():
    ids = TransactionIds(SECRET, Owner())
    header = ids.hop(1, "tx-a")
    assert ids.hops(header, "tx-a") == 1
    assert ids.hops(header, "tx-b") is None
    assert ids.hops("1.forged", "tx-a") is None
    assert ids.hops("x.y", "tx-a") is None


async def _route(forwarding: Forwarding, transaction_id: str, hops: int = 0):
    metadata = [("x-dbgateway-forwarded", forwarding.ids.hop(hops, transaction_id))] if hops else []
    return await forwarding.route(transaction_id, metadata, method="Query")


async def test_dns_peers_are_the_addresses_the_name_resolves_to():
    me = Owner("127.0.0.1:50051")
    forwarding = Forwarding(TransactionIds(SECRET, me), dns_name="localhost:50052")
    resolved = TransactionIds(SECRET, Owner("127.0.0.1:50052")).new()
    assert await _route(forwarding, resolved) == ("127.0.0.1:50052", 1)
    unresolved = TransactionIds(SECRET, Owner("127.0.0.2:50052")).new()
    with pytest.raises(GatewayError) as caught:
        await _route(forwarding, unresolved)
    assert caught.value.reason is Reason.TRANSACTION_NOT_FOUND
    # Ours: served here.
    assert await _route(forwarding, forwarding.new_transaction_id()) is None


async def test_a_forwarded_call_is_never_forwarded_between_replicas_again():
    me = Owner("127.0.0.1:1", 0)
    forwarding = Forwarding(
        TransactionIds(SECRET, me),
        peers=["127.0.0.1:1", "127.0.0.1:2"],
        workers={0: "unix:/w0", 1: "unix:/w1"},
    )
    elsewhere = TransactionIds(SECRET, Owner("127.0.0.1:2", 1)).new()
    assert await _route(forwarding, elsewhere) == ("127.0.0.1:2", 1)
    with pytest.raises(GatewayError):
        await _route(forwarding, elsewhere, hops=1)
    # Reaching the owning replica, a call may still go to the owning worker once.
    other_worker = TransactionIds(SECRET, Owner("127.0.0.1:1", 1)).new()
    assert await _route(forwarding, other_worker, hops=1) == ("unix:/w1", 2)
    with pytest.raises(GatewayError):
        await _route(forwarding, other_worker, hops=2)
    unknown_worker = TransactionIds(SECRET, Owner("127.0.0.1:1", 7)).new()
    with pytest.raises(GatewayError):
        await _route(forwarding, unknown_worker)
