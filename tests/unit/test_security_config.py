"""[server] TLS and limits, [[principals]], and the loopback rule: each
problem is one line naming the key."""

from __future__ import annotations

import hashlib
import re

import pytest

from dbgateway_server.config import Access, ConfigError, check_exposure, parse_config
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.security import ANONYMOUS, Guard

DIGEST = hashlib.sha256(b"s3cret").hexdigest()


def config(server: dict | None = None, principals: list | None = None):
    raw: dict = {
        "databases": {"lite": {"dsn": "sqlite::memory:"}, "pg": {"dsn": "postgresql://h/db"}}
    }
    if server is not None:
        raw["server"] = server
    if principals is not None:
        raw["principals"] = principals
    return parse_config(raw, env={}, source="gw.toml")


@pytest.mark.parametrize(
    ("principals", "key"),
    [
        ([{"token_sha256": DIGEST}], "principals[0].name"),
        ([{"name": "a", "token_sha256": "abc"}], "principals.a.token_sha256"),
        (
            [{"name": "a", "token_sha256": DIGEST, "databases": {"nope": "read"}}],
            "principals.a.databases.nope",
        ),
        (
            [{"name": "a", "token_sha256": DIGEST, "databases": {"lite": "admin"}}],
            "principals.a.databases.lite",
        ),
        ([{"name": "a", "token_sha256": DIGEST, "token": "x"}], "principals[0].token"),
        (
            [{"name": "a", "token_sha256": DIGEST}, {"name": "b", "token_sha256": DIGEST}],
            "principals.b.token_sha256",
        ),
        (
            [{"name": "a", "token_sha256": DIGEST}, {"name": "a", "token_sha256": "0" * 64}],
            "principals[1].name",
        ),
        ([{"name": "a", "token_sha256": DIGEST, "postgres_role": 7}], "principals.a.postgres_role"),
    ],
)
def test_principal_problems_name_the_key(principals, key):
    with pytest.raises(ConfigError, match=rf"^gw\.toml: {re.escape(key)}: "):
        config(principals=principals)


def test_tls_key_without_cert_names_the_key():
    with pytest.raises(ConfigError, match=r"server\.tls_cert: tls_cert and tls_key go together"):
        config(server={"tls_key": "k.pem"})


def test_an_unreadable_tls_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"server\.tls_cert: cannot read"):
        config(server={"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(tmp_path / "k")})


@pytest.mark.parametrize("listen", ["127.0.0.1:1", "localhost:1", "[::1]:1", "127.0.0.2:1"])
def test_loopback_needs_nothing(listen):
    check_exposure(config(server={"listen": listen}))


@pytest.mark.parametrize("listen", ["0.0.0.0:1", "[::]:1", "10.1.2.3:1", "gateway.internal:1"])
def test_beyond_loopback_without_protection_is_refused_naming_allow_insecure(listen):
    with pytest.raises(ConfigError, match="allow_insecure = true"):
        check_exposure(config(server={"listen": listen}))
    check_exposure(config(server={"listen": listen, "allow_insecure": True}))


def test_tokens_are_compared_by_digest_and_rights_are_per_database():
    cfg = config(
        principals=[{"name": "svc", "token_sha256": DIGEST.upper(), "databases": {"lite": "read"}}]
    )
    guard = Guard(cfg)
    svc = guard.authenticate([("authorization", "Bearer s3cret")])
    assert svc.name == "svc"
    assert guard.access(svc, "lite") is Access.READ
    for write, database in ((True, "lite"), (False, "pg")):
        with pytest.raises(GatewayError) as info:
            guard.access(svc, database, write=write)
        assert info.value.reason is Reason.PERMISSION_DENIED
    for metadata in ([], [("authorization", "Bearer nope")], [("authorization", "s3cret")]):
        with pytest.raises(GatewayError) as info:
            guard.authenticate(metadata)
        assert info.value.reason is Reason.UNAUTHENTICATED
    assert Guard(config()).authenticate([]) is ANONYMOUS


def test_a_principal_may_name_its_postgres_role():
    loaded = config(principals=[{"name": "a", "token_sha256": DIGEST, "postgres_role": "r"}])
    guard = Guard(loaded)
    assert guard.principals[0].postgres_role == "r"


def test_stream_idle_timeout_must_be_positive():
    assert config(server={"stream_idle_timeout": 2}).server.stream_idle_timeout == 2.0
    with pytest.raises(ConfigError, match=r"server\.stream_idle_timeout: "):
        config(server={"stream_idle_timeout": 0})


def test_a_kept_slot_stays_taken_until_released():
    guard = Guard(config(server={"max_concurrent_calls": 1}))
    with guard.call_slot(ANONYMOUS) as slot:
        release = slot.keep()
    with pytest.raises(GatewayError) as info, guard.call_slot(ANONYMOUS):
        pass
    assert info.value.reason is Reason.TOO_MANY_CALLS
    release()
    release()  # a second release frees nothing more
    with guard.call_slot(ANONYMOUS):
        pass
