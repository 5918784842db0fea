"""Fault injection: Coolify misbehaving, processes killed, PostgreSQL restarted."""

import pytest

pytest.register_assert_rewrite("tests.faults.support")
