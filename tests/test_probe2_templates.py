"""Security issue 24, finding 6 (templates): every template rendered from people's text (prompt
templates, judge prompts, rewrite prompts) is bounded in time, size and depth, and whatever goes
wrong in it is a 400 naming the template line through the API and the admin, nothing saved, or
a clear failure of the run in a worker; judge-prompt YAML files nested thousands deep or holding
a lone surrogate are refused naming the file and line."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from jinja2 import StrictUndefined

from evalsite.errors import ServiceError
from evolution.models import EvolutionPrompt
from generation.engine import render, sandbox
from generation.engine.sandbox import BoundedSandbox, Limits, TemplateRenderError
from generation.models import PromptTemplate
from judging.models import JudgePrompt
from judging.prompts import files as prompt_files
from tests.conftest import logged_in

NESTED_RANGES = (
    "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)
SELF_CALLING = "{% macro again(n) %}{{ again(n) }}{% endmacro %}\n{{ again(1) }}"
HUGE_OUTPUT = "{% for i in range(10000) %}{{ 'y' * 999 }}{% endfor %}"

# (template body put after a first line, what the error says, the line it names). The nested
# ranges reach the step limit in about a second on a quiet machine; on a busy one the time limit
# may come first, and either refusal is the sandbox doing its job.
NESTED_STOPS = (
    sandbox.TOO_MANY_STEPS.format(limit=Limits().max_steps),
    sandbox.TOO_SLOW.format(seconds=Limits().max_seconds),
)
BOMBS = {
    "nested ranges": (NESTED_RANGES, NESTED_STOPS, 2),
    "string times thirty million": (
        "{{ 'x' * 30000000 }}",
        sandbox.VALUE_TOO_LONG.format(limit=Limits().max_output),
        2,
    ),
    "division by zero": ("{{ 1/0 }}", "ZeroDivisionError: division by zero", 2),
    "self-calling macro": (SELF_CALLING, sandbox.TOO_DEEP, 2),
    "huge output": (HUGE_OUTPUT, sandbox.OUTPUT_TOO_LONG.format(limit=Limits().max_output), 2),
}


def _env(**limits) -> BoundedSandbox:
    return BoundedSandbox(undefined=StrictUndefined, limits=Limits(**limits))


def _fails(source: str, env: BoundedSandbox | None = None, **values) -> TemplateRenderError:
    with pytest.raises(TemplateRenderError) as caught:
        sandbox.compile_template(env or _env(), source).render(**values)
    return caught.value


# --- the bounded sandbox, alone ------------------------------------------------------------------


@pytest.mark.parametrize("name", BOMBS)
def test_each_bomb_stops_with_what_went_wrong_and_its_line(name):
    body, message, line = BOMBS[name]
    error = _fails("first line\n" + body)
    assert error.problem.startswith(message), error.problem  # str.startswith takes a tuple too
    assert error.line == line if name != "self-calling macro" else error.line in (2, 3)
    assert str(error).startswith(f"line {error.line}: ")


def test_a_range_longer_than_the_limit_is_refused_and_one_at_the_limit_runs():
    assert _fails("{{ range(10001)|length }}").problem == sandbox.RANGE_TOO_LONG.format(
        limit=10_000
    )
    assert sandbox.compile_template(_env(), "{{ range(10000)|length }}").render() == "10000"
    assert "range()" in _fails("{{ range(10**30)|length }}").problem


def test_a_render_past_its_time_stops_at_the_next_step():
    # A limit of no time at all: the first step is already late (no clock is raced here).
    error = _fails("{% for i in range(3) %}{{ i }}{% endfor %}", _env(max_seconds=0))
    assert error.problem == sandbox.TOO_SLOW.format(seconds=0)
    assert error.line == 1


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '{:>1000000000}'.format('x') }}",
        "{{ '%1000000000s' % 'x' }}",
        "{{ '%*s' % (1000000000, 'x') }}",
        "{{ ('x' * 999999)|list|join('y' * 999999) }}",
        "{{ ('x' * 99999).replace('', 'y' * 99999) }}",
        "{{ ('a\n' * 100000)|indent('x' * 100) }}",
        "{{ ([[1] * 10000] * 10000)|sum(start=[])|length }}",
        "{{ [1] * 30000000 }}",
        # Doubling in a loop: by ~, by +, in a set block, through a macro, in a filter block.
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}",
        "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='x') %}"
        "{% for i in range(40) %}{% set ns.s = twice(ns.s) %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s %}"
        "{% filter upper %}{{ ns.s }}{{ ns.s }}{% endfilter %}{% endset %}{% endfor %}",
    ],
)
def test_values_that_would_grow_past_the_limit_are_refused_before_they_are_made(source):
    assert _fails(source).problem == sandbox.VALUE_TOO_LONG.format(limit=1_000_000)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 7 ** 90000 }}",
        "{% set ns = namespace(n=3) %}{% for i in range(100) %}{% set ns.n = ns.n * ns.n %}"
        "{% endfor %}",
    ],
)
def test_numbers_too_large_are_refused(source):
    assert _fails(source).problem == sandbox.NUMBER_TOO_LARGE.format(limit=100_000)


def test_batch_and_slice_are_bounded_like_range():
    for source in ("{{ [1]|batch(1000000000, 0)|list }}", "{{ [1]|slice(1000000000)|list }}"):
        assert _fails(source).problem == sandbox.RANGE_TOO_LONG.format(limit=10_000)


def test_runtime_errors_name_their_line_and_compile_errors_theirs():
    assert str(_fails("a\nb\n{{ nope }}")) == "line 3: 'nope' is undefined"
    assert _fails("{{ ''.__class__ }}").problem.startswith("access to attribute '__class__'")
    assert (
        _fails(
            "{% macro m() %}{{ caller() }}{% endmacro %}\n{% call m() %}{{ 1/0 }}{% endcall %}"
        ).line
        == 2
    )
    with pytest.raises(TemplateRenderError) as caught:
        sandbox.compile_template(_env(), "ok\n{% for %}")
    assert caught.value.line == 2
    for deep in ("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", "{% if 1 %}" * 5000):
        with pytest.raises(TemplateRenderError) as caught:
            sandbox.compile_template(_env(), deep)
        assert caught.value.problem == sandbox.NESTED_TOO_DEEP


def test_ordinary_templates_render_as_jinja_renders_them():
    source = (
        "{% for m in messages %}{{ m.role }}: {{ m.content ~ '!' }}"
        "{% if not loop.last %}\n{% endif %}{% endfor %}"
        "|{{ '%s-%03d' % ('a', 7) }}|{{ 'x'|center(5) }}|{{ [1, 2]|join(',') }}"
        "|{{ '{:>4}'.format('b') }}|{{ 'ab' * 2 }}|{{ 2 ** 10 }}|{{ [1] + [2] }}"
    )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    text = sandbox.compile_template(_env(), source).render(messages=messages)
    assert text == "user: hi!\nassistant: yo!|a-007|  x  |1,2|   b|abab|1024|[1, 2]"


def test_the_renderer_reports_a_jinja_templates_failure_with_its_line():
    template = render.Template(
        name="bomb", version=1, kind=render.JINJA, jinja_source="ok\n{{ 'x' * 30000000 }}"
    )
    with pytest.raises(ValueError) as caught:
        render.render_prompt(template, render.conversation(["q"], []))
    assert str(caught.value) == render.JINJA_FAILED.format(
        name="bomb", version=1, error="line 2: " + sandbox.VALUE_TOO_LONG.format(limit=1_000_000)
    )
    assert "jinja_source" in render.problems(template)


# --- through the API and the admin: a 400 (a form error) naming the line, nothing saved ----------

# Bombs that fail on the sample values the checks render with: the first line shows every
# variable a prompt must show, so only the bomb is wrong.
JINJA_HEAD = "{% for m in messages %}{{ m.content }}{% endfor %}\n"
JUDGE_HEAD = "{{ question }} {{ answer_1 }} {{ answer_2 }}\n"
REWRITE_HEAD = "{{ instruction }}\n"


def _expected(name: str) -> tuple[str | tuple[str, ...], int]:
    _, message, line = BOMBS[name]
    return message, line


def _says(text: str, name: str) -> None:
    message, line = _expected(name)
    messages = message if isinstance(message, tuple) else (message,)
    if name == "self-calling macro":
        assert any(m in text for m in messages), text[:2000]
    else:
        assert any(f"line {line}: {m}" in text for m in messages), text[:2000]


@pytest.mark.django_db
@pytest.mark.parametrize("name", BOMBS)
def test_the_prompt_template_api_refuses_each_bomb_and_saves_nothing(admin_user, name):
    client = logged_in(admin_user)
    body = {"name": "bomb", "kind": "jinja", "jinja_source": JINJA_HEAD + BOMBS[name][0]}
    response = client.post("/api/prompt-templates/", body, content_type="application/json")
    assert response.status_code == 400
    _says(response.json()["detail"], name)
    assert not PromptTemplate.objects.filter(name="bomb").exists()

    # An edit of a good template to a bomb is refused the same way, the row left as it was.
    good = {"name": "good", "kind": "jinja", "jinja_source": JINJA_HEAD}
    row = client.post("/api/prompt-templates/", good, content_type="application/json").json()
    response = client.patch(
        f"/api/prompt-templates/{row['id']}/",
        {"jinja_source": body["jinja_source"]},
        content_type="application/json",
    )
    assert response.status_code == 400
    _says(response.json()["detail"], name)
    assert PromptTemplate.objects.get(pk=row["id"]).jinja_source == JINJA_HEAD


@pytest.mark.django_db
@pytest.mark.parametrize("name", BOMBS)
def test_the_prompt_template_admin_refuses_each_bomb_and_saves_nothing(admin_user, name):
    from tests.generation.test_templates_admin import FORM

    form = {
        **FORM,
        "name": "bomb",
        "kind": "jinja",
        "user_template": "{content}",
        "assistant_template": "{content}",
        "turn_separator": "",
        "jinja_source": JINJA_HEAD + BOMBS[name][0],
    }
    response = logged_in(admin_user).post("/admin/generation/prompttemplate/add/", form)
    assert response.status_code == 200
    _says(str(response.context["adminform"].form.errors), name)
    assert not PromptTemplate.objects.filter(name="bomb").exists()


@pytest.mark.django_db
def test_previewing_a_stored_template_that_fails_is_a_400_with_its_line(admin_user):
    # A row stored before these checks existed (written past the service, as old rows were).
    row = PromptTemplate.objects.create(
        name="legacy", version=1, kind="jinja", jinja_source="ok\n{{ 1/0 }}"
    )
    client = logged_in(admin_user)
    response = client.post(
        f"/api/prompt-templates/{row.pk}/preview/",
        {"turns": ["q"]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "line 2: ZeroDivisionError: division by zero" in response.json()["detail"]
    page = client.get(f"/admin/generation/prompttemplate/{row.pk}/change/")
    assert page.status_code == 200
    assert "line 2: ZeroDivisionError" in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("name", BOMBS)
def test_the_judge_prompt_api_refuses_each_bomb_and_saves_nothing(admin_user, name):
    body = {"name": "bomb", "template": JUDGE_HEAD + BOMBS[name][0]}
    response = logged_in(admin_user).post(
        "/api/judge-prompts/", body, content_type="application/json"
    )
    assert response.status_code == 400
    _says(response.json()["detail"], name)
    assert not JudgePrompt.objects.filter(name="bomb").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", BOMBS)
def test_the_judge_prompt_admin_refuses_each_bomb_and_saves_nothing(admin_user, name):
    form = {
        "name": "bomb",
        "description": "",
        "kind": "pairwise",
        "system_prompt": "",
        "template": JUDGE_HEAD + BOMBS[name][0],
        "verdict_format": "last_line_123",
        "score_min": 1,
        "score_max": 5,
    }
    response = logged_in(admin_user).post("/admin/judging/judgeprompt/add/", form)
    assert response.status_code == 200
    _says(str(response.context["adminform"].form.errors["template"]), name)
    assert not JudgePrompt.objects.filter(name="bomb").exists()


@pytest.mark.django_db
def test_a_stored_judge_prompt_that_fails_previews_as_a_400_and_its_page_still_opens(admin_user):
    row = JudgePrompt.objects.create(
        name="legacy",
        version=1,
        kind="pairwise",
        verdict_format="last_line_123",
        template=JUDGE_HEAD + "{{ 'x' * 30000000 }}",
    )
    client = logged_in(admin_user)
    response = client.post(
        f"/api/judge-prompts/{row.pk}/preview/", {}, content_type="application/json"
    )
    assert response.status_code == 400
    _says(response.json()["detail"], "string times thirty million")
    page = client.get(f"/admin/judging/judgeprompt/{row.pk}/change/")
    assert page.status_code == 200
    _says(page.content.decode(), "string times thirty million")


@pytest.mark.django_db
@pytest.mark.parametrize("name", BOMBS)
def test_the_rewrite_prompt_admin_refuses_each_bomb_and_saves_nothing(admin_user, name):
    before = EvolutionPrompt.objects.count()
    form = {"operation": "deepen", "template": REWRITE_HEAD + BOMBS[name][0], "active": "on"}
    response = logged_in(admin_user).post("/admin/evolution/evolutionprompt/add/", form)
    assert response.status_code == 200
    _says(str(response.context["adminform"].form.errors["template"]), name)
    assert EvolutionPrompt.objects.count() == before


@pytest.mark.django_db
def test_the_rewrite_prompt_service_refuses_a_bomb_with_its_line():
    from evalsite.errors import ServiceError
    from evolution.prompts import evolution_prompt_create

    with pytest.raises(ServiceError) as caught:
        evolution_prompt_create(operation="deepen", template=REWRITE_HEAD + "{{ 1/0 }}")
    assert "line 2: ZeroDivisionError" in str(caught.value)


# --- judge-prompt files: YAML too deep, or holding a lone surrogate -----------------------------

DEEP_FLOW = "name: deep\ntemplate: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_BLOCK = "name: deep\ntemplate:\n" + "- " * 5000 + "x\n"  # block sequences, one line
SURROGATE = (
    'name: lone\nkind: pairwise\ntemplate: "{{ question }} {{ answer_1 }} {{ answer_2 }} \\ud800"\n'
)
BAD_FILES = {
    "deep-flow.yaml": (DEEP_FLOW, prompt_files.YAML_TOO_DEEP.format(limit=32), 2),
    "deep-block.yaml": (DEEP_BLOCK, prompt_files.YAML_TOO_DEEP.format(limit=32), 3),
    "lone.yaml": (SURROGATE, prompt_files.LONE_SURROGATE, 3),
    "lone-key.yml": ('"\\udfff": 1\n', prompt_files.LONE_SURROGATE, 1),
    "lone.txt": ('---\nname: "x\\ud800"\n---\n{{ question }}\n', prompt_files.LONE_SURROGATE, 2),
}


def _file_says(text: str, filename: str) -> None:
    _, message, line = BAD_FILES[filename]
    assert f"{filename}, line {line}: {message}" in text, text[:2000]


@pytest.mark.django_db
@pytest.mark.parametrize("filename", BAD_FILES)
def test_a_bad_yaml_file_uploaded_through_the_api_is_a_400_naming_file_and_line(
    admin_user, filename
):
    before = JudgePrompt.objects.count()
    upload = SimpleUploadedFile(filename, BAD_FILES[filename][0].encode())
    response = logged_in(admin_user).post("/api/judge-prompts/import/", {"file": upload})
    assert response.status_code == 400
    _file_says(response.json()["file"][0], filename)
    assert JudgePrompt.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize("filename", ["deep-flow.yaml", "lone.yaml"])
def test_a_bad_yaml_file_in_the_admin_and_the_command_says_what_is_wrong(
    admin_user, tmp_path, filename
):
    before = JudgePrompt.objects.count()
    content = BAD_FILES[filename][0]
    upload = SimpleUploadedFile(filename, content.encode())
    response = logged_in(admin_user).post("/admin/judging/judgeprompt/import/", {"file": upload})
    assert response.status_code == 200
    _file_says(response.content.decode(), filename)
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError) as caught:
        call_command("load_judge_prompt", str(path))
    _file_says(str(caught.value), filename)
    assert JudgePrompt.objects.count() == before


def test_a_flat_yaml_prompt_still_loads_and_a_key_flood_is_listed_briefly():
    good = "name: y\ntemplate: '{{ question }} {{ answer_1 }} {{ answer_2 }}'\n"
    [(line, fields)] = prompt_files.parse_judge_prompt_file(good.encode(), "p.yaml")
    assert (line, fields["name"]) == (0, "y")
    flood = "".join(f"k{i}: 1\n" for i in range(5000))
    with pytest.raises(ValueError) as caught:
        prompt_files.parse_judge_prompt_file(flood.encode(), "p.yaml")
    assert "and 4995 more" in str(caught.value) and len(str(caught.value)) < 600


# --- in a worker: a template that passes its checks but bombs on real data fails the run --------

HUNG = 900  # only guards against a hung worker; nothing here asserts on time
ON_BOOM = "{% if 'BOOM' in {value} %}{bomb}{% endif %}"


@pytest.mark.django_db
def test_a_judge_prompt_that_bombs_on_a_question_is_refused_when_its_run_is_made():
    """A judge run renders every prompt it will send when it is made (judging/plan.py, the fit
    check), so a prompt that bombs on the study's data is refused there with the line, and no
    run reaches a worker."""
    from generation.importers import ParsedQuestion
    from judging.models import JudgeRun
    from judging.prompts import judge_prompt_create
    from judging.runs import judge_run_create
    from tests.judging.factories import idle_judge, judge_study

    bomb = ON_BOOM.replace("{value}", "question").replace("{bomb}", "{{ 'x' * 30000000 }}")
    # The checks render sample values: no BOOM there, so the prompt is saved.
    prompt = judge_prompt_create(name="bombs-on-data", template=JUDGE_HEAD + bomb)
    study = judge_study(questions=[ParsedQuestion(line=1, text="BOOM: 爆発する質問")])
    with pytest.raises(ServiceError) as refused:
        judge_run_create(judge=idle_judge(), study=study, prompt=prompt)
    _says(str(refused.value), "string times thirty million")
    assert len(str(refused.value)) < 4000 and "x" * 100 not in str(refused.value)
    assert not JudgeRun.objects.exists()


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_prompt_template_that_bombs_on_a_question_fails_its_generation_run(
    shared_worker, tiny_model_dir
):
    from generation.importers import ParsedQuestion
    from generation.models import GenerationRun
    from generation.registry import prompt_set_create
    from generation.runs import generation_run_create
    from generation.templates import template_create
    from tests.conftest import wait_for
    from tests.generation.conftest import register_tiny

    bomb = ON_BOOM.replace("{value}", "messages[-1].content").replace("{bomb}", NESTED_RANGES)
    template_create(name="bombs-on-data", kind="jinja", jinja_source=JINJA_HEAD + bomb)
    model = register_tiny(tiny_model_dir, prompt_format="bombs-on-data")
    prompt_set = prompt_set_create(
        name="boom", questions=[ParsedQuestion(line=1, text="BOOM: 爆発する質問")]
    )
    worker = shared_worker("gpu,default")
    run = generation_run_create(model=model, prompt_set=prompt_set)
    wait_for(
        lambda: GenerationRun.objects.get(pk=run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"the run to end; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED
    assert (
        render.JINJA_FAILED.format(name="bombs-on-data", version=1, error="line 2: ") in run.error
    )
    _says(run.error, "nested ranges")
    assert run.answers.count() == 0
    assert worker.process.poll() is None
