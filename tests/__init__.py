"""The test suite. Its shared helpers are ``tests.support``; pytest rewrites their asserts as
it does a test module's, since helpers assert on responses the way tests do (this must run
before anything imports them, hence here rather than in conftest.py)."""

import pytest

pytest.register_assert_rewrite("tests.support")
