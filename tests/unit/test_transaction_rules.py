"""Pure rules of the transaction RPCs: option mapping and what is retried."""

from __future__ import annotations

import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway_server.backends.base import IsolationLevel
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.resilience.retry import CallKind, retryable
from dbgateway_server.service.calls import transaction_mode
from dbgateway_server.transactions import new_transaction_id


def test_every_isolation_level_of_the_api_maps_to_one_of_the_engines():
    levels = {
        value.number: transaction_mode(pb.TransactionOptions(isolation=value.number)).isolation
        for value in pb.IsolationLevel.DESCRIPTOR.values
    }
    assert levels[pb.ISOLATION_LEVEL_UNSPECIFIED] is None
    assert {v for k, v in levels.items() if k} == set(IsolationLevel)


def test_unknown_isolation_level_is_invalid_argument():
    with pytest.raises(GatewayError) as info:
        transaction_mode(pb.TransactionOptions(isolation=99))
    assert info.value.reason is Reason.INVALID_REQUEST


def test_only_serialization_failures_and_deadlocks_are_retried_whole():
    # Once BEGIN reached the database, only a definite "not committed" conflict
    # makes running the whole transaction again safe.
    rerun = {
        reason
        for reason in Reason
        if retryable(GatewayError(reason, "x"), CallKind.TRANSACTION, losses_before=0)
    }
    assert rerun == {Reason.SERIALIZATION_FAILURE, Reason.DEADLOCK}


def test_transaction_ids_carry_at_least_128_random_bits():
    ids = {new_transaction_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) * 6 >= 128 for i in ids)
