"""Fixtures of the jobs' tests: one CPU thread (the tiny model: tests/conftest.py)."""
import pytest


@pytest.fixture(autouse=True)
def _jobs_one_thread(one_thread):
    """Every job test runs with one thread (tests/conftest.py)."""
