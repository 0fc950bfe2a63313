from __future__ import annotations

import pytest

from tests.generation.conftest import register_tiny


@pytest.fixture
def tiny(tiny_model_dir):
    return register_tiny(tiny_model_dir)


@pytest.fixture
def inline(settings):
    """A run executed in the test's own process: one torch thread (a small shared machine), and
    no heartbeat thread (the run row is in the test's transaction, invisible to it)."""
    import torch

    settings.RUN_HEARTBEAT_INTERVAL = 3600
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bench_staff(django_user_model, username: str = "operator", *, run_models: bool = True):
    """Staff who may view models and run benchmarks (and run models unless told not to)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="benchmarks")
    perms = perms | Permission.objects.filter(codename="view_languagemodel")
    if run_models:
        perms = perms | Permission.objects.filter(codename="run_languagemodel")
    user.user_permissions.set(perms)
    return user


# The session's `transformers serve` over the tiny model (tests/generation/conftest.py).
from tests.generation.conftest import endpoint_proxy, tiny_server  # noqa: E402, F401
