"""SQLAlchemy's dialect compliance suite, as every third-party dialect runs it."""

from sqlalchemy.testing.suite import *  # noqa: F403
