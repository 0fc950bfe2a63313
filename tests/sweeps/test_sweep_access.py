"""Who may see and start sweeps (page, chart, API, admin), the admin's "Sweep…" action and
table, and the `sweep` command without --wait. Runs are only queued (no worker)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from generation.registry import language_model_register
from sweeps.models import Sweep, SweepCell
from sweeps.services import sweep_create
from tests.conftest import logged_in
from tests.judging.factories import idle_judge
from tests.sweeps.conftest import TINY_SWEEP

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def base_model():
    return language_model_register(name="sweep-base", name_or_path="tiny-0")


@pytest.fixture
def sweep(base_model, fixture_dataset, sweep_questions):
    return sweep_create(
        name="access",
        base_model=base_model,
        mixes=[[fixture_dataset]],
        rows=[4, 8],
        learning_rates=[1e-3, 5e-3],
        params=TINY_SWEEP,
        prompt_set=sweep_questions,
        judge=idle_judge(),
    )


def _staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pass", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def _api_body(base_model, fixture_dataset, sweep_questions, name="from-api") -> dict:
    return {
        "name": name,
        "base_model": base_model.pk,
        "mixes": [[fixture_dataset.pk]],
        "rows": [4, None],
        "learning_rates": [1e-3],
        "params": {"max_steps": 2},
        "prompt_set": sweep_questions.pk,
        "judge": idle_judge().pk,
    }


def test_the_sweep_pages_are_for_staff_who_may_view_sweeps(
    sweep, annotator, bare_staff, django_user_model
):
    viewer = _staff(django_user_model, "viewer", "view_sweep")
    urls = ["/staff/sweeps/", f"/staff/sweeps/{sweep.pk}/", f"/staff/sweeps/{sweep.pk}/chart.png"]
    for url in urls:
        assert logged_in(annotator).get(url).status_code == 302  # to the staff sign-in
        assert logged_in(bare_staff).get(url).status_code == 403
        assert logged_in(viewer).get(url).status_code == 200
    assert logged_in(viewer).get(f"/staff/sweeps/{sweep.pk}/chart.gif").status_code == 404
    page = logged_in(viewer).get(f"/staff/sweeps/{sweep.pk}/").content.decode()
    assert page.count("data-position=") == 4 and "training" in page
    assert 'class="best"' not in page  # nothing scored yet
    assert "access" in logged_in(viewer).get("/staff/sweeps/").content.decode()


def test_starting_a_sweep_through_the_api_needs_the_right_to_run_models(
    base_model, fixture_dataset, sweep_questions, django_user_model
):
    body = _api_body(base_model, fixture_dataset, sweep_questions)
    adder = _staff(django_user_model, "adder", "add_sweep", "view_sweep")
    runner = _staff(django_user_model, "runner", "add_sweep", "view_sweep", "run_languagemodel")
    assert logged_in(adder).post("/api/sweeps/", body, "application/json").status_code == 403
    created = logged_in(runner).post("/api/sweeps/", body, "application/json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert [(c["rows"], c["train_rows"]) for c in data["cells"]] == [(4, 4), (None, 268)]
    assert data["counts"]["training"] == 2
    assert logged_in(runner).get("/api/sweeps/").json()["results"][0]["name"] == "from-api"
    again = logged_in(runner).post("/api/sweeps/", body, "application/json")
    assert again.status_code == 400 and "already exists" in again.json()["detail"]


def test_the_api_cancels_a_running_sweep_once_and_draws_its_chart(sweep, django_user_model):
    changer = _staff(django_user_model, "changer", "change_sweep", "view_sweep")
    viewer = _staff(django_user_model, "viewer", "view_sweep")
    assert logged_in(viewer).post(f"/api/sweeps/{sweep.pk}/cancel/").status_code == 403
    first = logged_in(changer).post(f"/api/sweeps/{sweep.pk}/cancel/")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert logged_in(changer).post(f"/api/sweeps/{sweep.pk}/cancel/").status_code == 409
    svg = logged_in(viewer).get(f"/api/sweeps/{sweep.pk}/plot/?image=svg")
    assert svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
    assert logged_in(viewer).get(f"/api/sweeps/{sweep.pk}/plot/?image=gif").status_code == 400


def test_the_sweep_action_on_language_models_starts_one_sweep(
    admin_user, base_model, fixture_dataset, sweep_questions
):
    client = logged_in(admin_user)
    url = "/admin/generation/languagemodel/"
    chosen = {"action": "start_sweep", "_selected_action": [base_model.pk]}
    page = client.post(url, chosen)
    assert page.status_code == 200 and b"Start a fine-tune sweep" in page.content
    form = {
        **chosen,
        "apply": "1",
        "name": "from-admin",
        "datasets": [fixture_dataset.pk],
        "rows": "4, all",
        "learning_rates": "1e-3,3e-3",
        "epochs": "1",
        "methods": ["lora", "full"],
        "max_steps": "2",
        "prompt_set": sweep_questions.pk,
        "judge": idle_judge().pk,
        "mode": "pairwise",
        "seed": "0",
    }
    bad = client.post(url, {**form, "rows": "4, many"})
    assert b"rows: &#x27;many&#x27; is not a whole number or &#x27;all&#x27;" in bad.content
    done = client.post(url, form, follow=True)
    assert b"Started sweep &#x27;from-admin&#x27;: 8 fine-tune runs" in done.content
    sweep = Sweep.objects.get(name="from-admin")
    assert sweep.created_by == admin_user
    assert {(c.rows, c.method) for c in sweep.cells.all()} == {
        (4, "lora"),
        (4, "full"),
        (None, "lora"),
        (None, "full"),
    }
    change = client.get(f"/admin/sweeps/sweep/{sweep.pk}/change/").content.decode()
    assert change.count("data-position=") == 8 and f"/staff/sweeps/{sweep.pk}/chart.png" in change


def test_the_sweep_action_is_only_offered_to_staff_who_may_run_models(
    base_model, django_user_model
):
    viewer = _staff(django_user_model, "lm-viewer", "view_languagemodel", "add_sweep")
    page = logged_in(viewer).get("/admin/generation/languagemodel/").content
    assert b"start_sweep" not in page


def test_the_admin_cancels_a_sweep(admin_user, sweep):
    client = logged_in(admin_user)
    client.post("/admin/sweeps/sweep/", {"action": "cancel_sweeps", "_selected_action": [sweep.pk]})
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.CANCELLED
    assert set(sweep.cells.values_list("status", flat=True)) == {SweepCell.Status.CANCELLED}


def test_the_command_starts_a_sweep_and_prints_its_cells(
    base_model, fixture_dataset, sweep_questions, capsys
):
    idle_judge()
    call_command(
        "sweep",
        "--base=sweep-base",
        f"--dataset={fixture_dataset.name}",
        "--rows=4,8",
        "--lr=1e-3",
        "--method=lora,full",
        "--max-steps=2",
        f"--prompt-set={sweep_questions.name}",
        "--judge=heronquill-judge",
        "--name=from-command",
    )
    out = capsys.readouterr().out
    sweep = Sweep.objects.get(name="from-command")
    assert out.startswith(f"sweep {sweep.pk} 'from-command': 4 cells of sweep-base")
    for cell in sweep.cells.all():
        assert f"cell {cell.position} (instructions-ja, rows {cell.rows}, lr 0.001" in out
        assert f"fine-tune run {cell.finetune_run_id}" in out
    assert f"queued; follow it at /staff/sweeps/{sweep.pk}/" in out


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--dataset=nowhere", "no instruction data set named 'nowhere'"),
        ("--rows=4,x", "--rows: rows: 'x' is not a whole number or 'all'"),
        ("--params=[1]", "--params takes a JSON object"),
    ],
)
def test_the_command_says_what_is_wrong(
    base_model, fixture_dataset, sweep_questions, argument, message
):
    idle_judge()
    arguments = {
        "--dataset": f"--dataset={fixture_dataset.name}",
        "--rows": "--rows=4",
        "--params": "--params={}",
    }
    arguments[argument.split("=")[0]] = argument
    with pytest.raises(CommandError, match=message.replace("[", r"\[")):
        call_command(
            "sweep",
            "--base=sweep-base",
            *arguments.values(),
            "--lr=1e-3",
            f"--prompt-set={sweep_questions.name}",
            "--judge=heronquill-judge",
        )
    assert not Sweep.objects.exists()
