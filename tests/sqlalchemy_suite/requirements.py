"""What the engines behind the suite's URL support, for SQLAlchemy's suite.

The same class serves the dbgateway dialects and the native drivers they are
compared with, so both run the same tests. A few requirements are closed only
for dbgateway, each for a reason of the gateway's design (the comment says
which); the suite counts those tests as skipped for it.
"""

from __future__ import annotations

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


def _through_gateway(config: object) -> bool:
    return "dbgateway" in config.db.dialect.driver  # type: ignore[attr-defined]


def _on(*names: str) -> exclusions.compound:
    return exclusions.only_on(list(names))


class Requirements(SuiteRequirements):
    @property
    def schemas(self) -> exclusions.compound:
        # Other schemas need a shared test_schema: a MariaDB database and an
        # ATTACHed SQLite file; PostgreSQL's live inside the run's database.
        return _on("postgresql")

    @property
    def cross_schema_fk_reflection(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def implicit_default_schema(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def default_schema_name_switch(self) -> exclusions.compound:
        # Switching it is a session-wide SET search_path, which the gateway
        # refuses on pooled connections.
        return exclusions.skip_if(_through_gateway) + _on("postgresql")

    @property
    def temp_table_reflection(self) -> exclusions.compound:
        # A temporary table is session state: the gateway allows it only
        # inside a transaction, which the suite's reflection fixtures leave.
        # (Closed for the native drivers too, so both run the same tests.)
        return exclusions.closed()

    @property
    def temporary_tables(self) -> exclusions.compound:
        return exclusions.closed()

    @property
    def temporary_views(self) -> exclusions.compound:
        return exclusions.closed()

    @property
    def independent_connections(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def views(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def foreign_key_constraint_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def unique_constraint_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def index_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def comment_reflection(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb")

    @property
    def check_constraint_reflection(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb", "sqlite")

    @property
    def sequences(self) -> exclusions.compound:
        return _on("postgresql", "mariadb")

    @property
    def ctes(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def ctes_with_update_delete(self) -> exclusions.compound:
        return _on("postgresql", "sqlite", "mysql", "mariadb")

    @property
    def ctes_on_dml(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def json_type(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def array_type(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def uuid_data_type(self) -> exclusions.compound:
        return _on("postgresql", "mariadb")

    @property
    def datetime_timezone(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def time_timezone(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def datetime_implicit_bound(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb")

    @property
    def isolation_level(self) -> exclusions.compound:
        return exclusions.open()

    def get_isolation_levels(self, config: object) -> dict[str, object]:
        # What the dialect under test says, so that the dbgateway dialect and
        # the native driver are each held to their own list.
        db = config.db  # type: ignore[attr-defined]
        with db.connect() as conn:
            dbapi_connection = conn.connection.dbapi_connection
            supported = list(db.dialect.get_isolation_level_values(dbapi_connection))
        return {"default": db.dialect.default_isolation_level, "supported": supported}

    @property
    def autocommit(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def savepoints(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def server_side_cursors(self) -> exclusions.compound:
        return exclusions.only_if(lambda config: config.db.dialect.supports_server_side_cursors)

    @property
    def precision_numerics_enotation_large(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb")

    @property
    def precision_numerics_many_significant_digits(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb")

    @property
    def precision_numerics_retains_significant_digits(self) -> exclusions.compound:
        return _on("postgresql", "mysql", "mariadb")

    @property
    def computed_columns(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def identity_columns(self) -> exclusions.compound:
        return _on("postgresql")

    @property
    def identity_columns_standard(self) -> exclusions.compound:
        return _on("postgresql")
