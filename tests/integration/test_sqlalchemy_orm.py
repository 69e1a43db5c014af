"""The ORM on the dbgateway dialects, sync and async, on all three engines:
relationships, a unit of work, rollback on error, SAVEPOINTs."""

from __future__ import annotations

import decimal
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from dbgateway import dbapi
from tests.integration.sqlalchemy_support import ENGINES, gateway_url, native_rows
from tests.support import ServerProcess, unique_name

SUFFIX = unique_name("orm")


class Base(orm.DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = f"{SUFFIX}_author"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)
    books: orm.Mapped[list[Book]] = orm.relationship(
        back_populates="author", cascade="all, delete-orphan", order_by="Book.id"
    )


class Book(Base):
    __tablename__ = f"{SUFFIX}_book"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    price: orm.Mapped[decimal.Decimal] = orm.mapped_column(sa.Numeric(8, 2))
    author_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Author.id))
    author: orm.Mapped[Author] = orm.relationship(back_populates="books")


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[sa.Engine]:
    eng = sa.create_engine(gateway_url(server, request.param))
    Base.metadata.create_all(eng)
    yield eng
    Base.metadata.drop_all(eng)
    eng.dispose()


@pytest.fixture
def clean(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as conn:
        conn.execute(sa.delete(Book))
        conn.execute(sa.delete(Author))
    return engine


def _count(server: ServerProcess, engine: sa.Engine, pg: str, my: str, table: str) -> int:
    rows = native_rows(server, engine.dialect.name, pg, my, f"SELECT count(*) FROM {table}")
    return int(rows[0][0])


def test_unit_of_work_inserts_updates_and_deletes_through_relationships(
    clean: sa.Engine, server: ServerProcess, postgres_dsn: str, mysql_dsn: str
) -> None:
    with orm.Session(clean) as session, session.begin():
        ada = Author(name="Ada", books=[Book(title="Notes", price=decimal.Decimal("9.50"))])
        ada.books.append(Book(title="Engines", price=decimal.Decimal("12.25")))
        session.add_all([ada, Author(name="Brian")])

    with orm.Session(clean) as session, session.begin():
        ada = session.scalars(sa.select(Author).where(Author.name == "Ada")).one()
        assert [b.title for b in ada.books] == ["Notes", "Engines"]  # lazy load
        ada.books[0].price = decimal.Decimal("10.00")
        del ada.books[1]  # delete-orphan
        session.delete(session.scalars(sa.select(Author).where(Author.name == "Brian")).one())

    with orm.Session(clean) as session:
        authors = session.scalars(sa.select(Author).options(orm.selectinload(Author.books))).all()
        assert [(a.name, [(b.title, b.price) for b in a.books]) for a in authors] == [
            ("Ada", [("Notes", decimal.Decimal("10.00"))])
        ]
    # What the database itself holds, not what the session remembers.
    assert _count(server, clean, postgres_dsn, mysql_dsn, Book.__tablename__) == 1
    assert _count(server, clean, postgres_dsn, mysql_dsn, Author.__tablename__) == 1


def test_a_failing_flush_rolls_back_the_whole_unit_of_work(
    clean: sa.Engine, server: ServerProcess, postgres_dsn: str, mysql_dsn: str
) -> None:
    with orm.Session(clean) as session:
        session.add(Author(name="Ada", books=[Book(title="Notes", price=decimal.Decimal(1))]))
        session.add(Author(name="Ada"))
        with pytest.raises(sa.exc.IntegrityError) as caught:
            session.commit()
        assert isinstance(caught.value.orig, dbapi.IntegrityError)
        assert caught.value.orig.reason == "UNIQUE_VIOLATION"
        session.rollback()
        session.add(Author(name="Grace"))
        session.commit()  # the session is usable again
    assert _count(server, clean, postgres_dsn, mysql_dsn, Book.__tablename__) == 0
    names = native_rows(
        server,
        clean.dialect.name,
        postgres_dsn,
        mysql_dsn,
        f"SELECT name FROM {Author.__tablename__}",
    )
    assert [tuple(r) for r in names] == [("Grace",)]


def test_begin_nested_rolls_back_to_its_savepoint_only(clean: sa.Engine) -> None:
    with orm.Session(clean) as session:
        with session.begin():
            session.add(Author(name="Outer"))
            session.flush()
            with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
                session.add(Author(name="Outer"))  # duplicate: the savepoint rolls back
            inner = session.begin_nested()
            session.add(Author(name="Discarded"))
            session.flush()
            inner.rollback()
            with session.begin_nested():
                session.add(Author(name="Kept"))
        names = session.scalars(sa.select(Author.name).order_by(Author.name)).all()
    assert names == ["Kept", "Outer"]


# -- asyncio ----------------------------------------------------------------------


@pytest.fixture
async def async_engine(server: ServerProcess, engine: sa.Engine) -> AsyncIterator[AsyncEngine]:
    """The async twin of ``engine`` (same engine, whose fixture made the tables)."""
    eng = create_async_engine(gateway_url(server, engine.dialect.name, asyncio=True))
    async with eng.begin() as conn:
        await conn.execute(sa.delete(Book))
        await conn.execute(sa.delete(Author))
    yield eng
    await eng.dispose()


async def test_async_unit_of_work_with_relationships(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        session.add(
            Author(
                name="Ada",
                books=[
                    Book(title="Notes", price=decimal.Decimal("9.50")),
                    Book(title="Engines", price=decimal.Decimal("12.25")),
                ],
            )
        )
    async with AsyncSession(async_engine) as session, session.begin():
        ada = (
            await session.scalars(
                sa.select(Author)
                .options(orm.selectinload(Author.books))
                .where(Author.name == "Ada")
            )
        ).one()
        ada.books[0].title = "Notes, revised"
        await session.delete(ada.books[1])
    async with AsyncSession(async_engine) as session:
        titles = (await session.scalars(sa.select(Book.title).order_by(Book.id))).all()
    assert titles == ["Notes, revised"]


async def test_async_failing_flush_rolls_back_and_savepoints_nest(
    async_engine: AsyncEngine,
) -> None:
    async with AsyncSession(async_engine) as session:
        session.add_all([Author(name="Ada"), Author(name="Ada")])
        with pytest.raises(sa.exc.IntegrityError):
            await session.commit()
        await session.rollback()

        async with session.begin():
            session.add(Author(name="Outer"))
            await session.flush()
            with pytest.raises(sa.exc.IntegrityError):
                async with session.begin_nested():
                    session.add(Author(name="Outer"))
            async with session.begin_nested():
                session.add(Author(name="Kept"))
        names = (await session.scalars(sa.select(Author.name).order_by(Author.name))).all()
    assert names == ["Kept", "Outer"]
