"""Schemathesis against our OpenAPI schema, as a staff user and as an annotator.

Every operation gets a fixed number of generated requests (EXAMPLES); the checks are the two the
security pass asks for: no server error, and every response conforms to the schema.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils.crypto import get_random_string
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from evalsite.wsgi import application

EXAMPLES = 8
CHECKS = [not_a_server_error, response_schema_conformance]

# Every operation is fuzzed in `make test`; `make test-quick` fuzzes these (tests/conftest.py):
# a list, a create, an edit, and the annotator's loop of next pair and vote.
pytestmark = pytest.mark.slow
QUICK_CASES = (
    "[GET /api/studies/]",
    "[POST /api/studies/]",
    "[PATCH /api/models/{id}/]",
    "[GET /api/studies/{study_id}/next/]",
    "[POST /api/assignments/{token}/vote/]",
)


def _load_schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(document)))
    loaded.app = application
    return loaded


schema = _load_schema()


def _headers(user: User) -> dict[str, str]:
    """Session cookie plus a CSRF cookie/header pair, as the browser pages send them."""
    client = Client()
    client.force_login(user)
    csrf = get_random_string(32)
    return {
        "Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}",
        "X-CSRFToken": csrf,
    }


@pytest.fixture(scope="module")
def fuzz_database(django_db_setup, django_db_blocker):
    """The test database for the whole module, in autocommit as in production, emptied once
    when the module ends (as a transactional test empties it) rather than after every case:
    what a case creates stays for the cases after it, as on a running site.

    Autocommit, because inside a test transaction Django's end-of-request close_old_connections
    (which the WSGI handler fires, unlike the test Client) would close PostgreSQL's connection,
    and one refused value would abort every later query.
    """
    from django.core.management import call_command

    with django_db_blocker.unblock():
        yield
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def _django_db_helper(fuzz_database):
    """pytest-django's per-test database set-up (a flush after each transactional test),
    replaced in this module by the module's one database (fuzz_database)."""
    yield


@pytest.fixture
def staff_headers(fuzz_database):
    user, _ = User.objects.get_or_create(
        username="fuzz-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    return _headers(user)


@pytest.fixture
def annotator_headers(fuzz_database):
    user, _ = User.objects.get_or_create(username="fuzz-annotator")
    user.groups.add(Group.objects.get_or_create(name="annotators")[0])
    return _headers(user)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Every case is a transactional test (requests in autocommit) on the module's database.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@FUZZ
def test_the_api_as_staff(case, staff_headers):
    case.call_and_validate(headers=staff_headers, checks=CHECKS)


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@FUZZ
def test_the_api_as_an_annotator(case, annotator_headers):
    case.call_and_validate(headers=annotator_headers, checks=CHECKS)
