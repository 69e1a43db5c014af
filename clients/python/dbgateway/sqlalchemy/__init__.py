"""SQLAlchemy 2 dialects over dbgateway: ``postgresql+dbgateway``,
``mysql+dbgateway``, ``sqlite+dbgateway`` and their ``_async`` variants.

    engine = sqlalchemy.create_engine("postgresql+dbgateway://127.0.0.1:50051/orders")

``HOST:PORT`` is the gateway, the path is the gateway's database name. Query
options: ``tls=true`` (system roots) or ``tls_ca=PATH`` (with ``tls_cert`` /
``tls_key`` for mutual TLS), ``token=...`` (or the ``DBGATEWAY_TOKEN``
environment variable, or the URL's password), ``timeout=SECONDS``. Each
dialect subclasses SQLAlchemy's own dialect for the engine and changes only
what the transport changes: isolation levels become ``TransactionOptions``,
server-side cursors become ``StreamQuery``, and the statements SQLAlchemy
would send to set up a session are answered without touching the pooled
connection (see :mod:`dbgateway.sqlalchemy._base`). Requires the
``sqlalchemy`` extra.
"""
