"""Django set-up for the integration tests: the test project's settings and database.

``DJANGO_SETTINGS_MODULE`` is the small project in ``tests/django/project``.
Django is set up once; the test database (SQLite, in memory, shared between
threads) is created and migrated once per session, as Django's test runner
does. Each test gets fresh in-memory channel layers (``memory_layers``).
"""

from __future__ import annotations

import os

import django
import pytest

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django.project.settings"
_layer_url = os.environ.pop("CHANNEL_LAYER_URL", None)  # the settings read it: memory://
django.setup()
if _layer_url is not None:
    os.environ["CHANNEL_LAYER_URL"] = _layer_url


@pytest.fixture(scope="session", autouse=True)
def django_test_environment():
    """Django's test environment and a migrated test database, for the whole session."""
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)
    teardown_test_environment()


@pytest.fixture(autouse=True)
def fresh_layers():
    """Every test starts with empty in-memory layers, routed as the settings say."""
    from worker.django.testing import memory_layers

    with memory_layers():
        yield


@pytest.fixture
def db():
    """Database access inside a transaction that is rolled back after the test."""
    from django.db import transaction

    with transaction.atomic():
        yield
        transaction.set_rollback(True)
