"""Property: whatever Value tree a caller sends as a parameter, each engine
answers OK or a clean INVALID_ARGUMENT / UNIMPLEMENTED, and keeps serving."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import value_pb2
from tests.support import call_error

ECHO = {"pg": "SELECT $1", "mysql": "SELECT %s", "lite": "SELECT ?"}
CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED}

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
scalars = st.one_of(
    st.just(value_pb2.Value(null_value="NULL_VALUE")),
    st.booleans().map(lambda b: value_pb2.Value(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: value_pb2.Value(int_value=i)),
    st.integers(0, 2**64 - 1).map(lambda i: value_pb2.Value(uint_value=i)),
    st.floats().map(lambda f: value_pb2.Value(double_value=f)),
    text.map(lambda s: value_pb2.Value(string_value=s)),
    st.binary(max_size=40).map(lambda b: value_pb2.Value(bytes_value=b)),
    text.map(lambda s: value_pb2.Value(decimal_value=s)),
    text.map(lambda s: value_pb2.Value(datetime_value=s)),
    text.map(lambda s: value_pb2.Value(date_value=s)),
    text.map(lambda s: value_pb2.Value(time_value=s)),
    text.map(lambda s: value_pb2.Value(json_value=s)),
    text.map(lambda s: value_pb2.Value(uuid_value=s)),
    st.just(value_pb2.Value()),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4).map(
        lambda items: value_pb2.Value(list_value=value_pb2.ListValue(values=items))
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("engine", sorted(ECHO))
def test_any_value_tree_is_answered_cleanly(db, engine):
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(value=values)
    def echo(value: value_pb2.Value) -> None:
        try:
            db.Query(pb.QueryRequest(database=engine, sql=ECHO[engine], params=[value]), timeout=10)
        except grpc.RpcError as exc:
            err = call_error(exc)
            assert err.code in CLEAN, (value, err)

    echo()
    reply = db.Query(pb.QueryRequest(database=engine, sql="SELECT 1"), timeout=10)
    assert reply.rows[0].values[0].int_value == 1
