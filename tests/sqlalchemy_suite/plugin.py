"""Loads SQLAlchemy's testing plugin (``-p tests.sqlalchemy_suite.plugin``);
importing it from a module named on the command line, rather than from a
``conftest.py``, keeps it out of the main test run."""

import pytest

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402, F403
