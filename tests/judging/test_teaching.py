"""Teaching the tiny model to judge (judging/teaching.py): the examples, the short prompt, and a
taught judge whose verdicts parse when it judges a real study through the judge-run path."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from generation.engine.examples import join_instruction
from generation.engine.tiny import FIXTURES, MODEL_SHAPE
from judging.engine import verdicts
from judging.engine.presets import JA_GRADING, JA_PAIRWISE
from judging.engine.verdicts import BRACKETS_ABC, FIRST, SECOND, TIE
from judging.teaching import (
    NO_PAIRS,
    NOT_LAST_LINE,
    NOT_PAIRWISE,
    TINY_PAIRWISE,
    Pair,
    corpus_pairs,
    preferred,
    verdict_examples,
)

QUESTION = "梅雨の時期に洗濯物を早く乾かす方法を教えてください。"
ON_TOPIC = "洗濯物の間をあけて干し、扇風機で風を当てると早く乾きます。"
OFF_TOPIC = "山道では歩幅を小さくすると疲れにくくなります。"
ANSWER_TOKENS = 96  # the demo's tiny models' max_new_tokens


@pytest.fixture
def quiet_heartbeat(settings):
    # Inline runs inside the test's transaction: a heartbeat thread's own connection cannot see
    # the run rows, and the runs are short.
    settings.RUN_HEARTBEAT_INTERVAL = 3600


def test_the_answer_that_uses_more_of_the_question_is_preferred_and_equal_is_a_tie():
    assert preferred(QUESTION, ON_TOPIC, OFF_TOPIC) == FIRST
    assert preferred(QUESTION, OFF_TOPIC, ON_TOPIC) == SECOND
    assert preferred(QUESTION, ON_TOPIC, ON_TOPIC) == TIE
    # Punctuation and spaces are not the question's words.
    assert preferred("はい。", "。 、", "") == TIE


def test_each_example_is_the_rendered_prompt_then_a_reason_and_the_verdict_it_states():
    pairs = [Pair(QUESTION, ON_TOPIC, OFF_TOPIC), Pair(QUESTION, OFF_TOPIC, OFF_TOPIC)]
    examples = verdict_examples(TINY_PAIRWISE, pairs, 60, seed=3)
    assert len(examples) == 60
    seen = Counter()
    for example in examples:
        assert example.instruction.startswith("二つの回答のうち")
        one, two = _shown(example.instruction)
        said = verdicts.parse_pairwise(TINY_PAIRWISE.verdict_format, example.output)
        assert said == preferred(QUESTION, one, two)
        assert example.output.count("\n") == 1  # one reason line, then the verdict line
        seen[said] += 1
    # Both orders of the clear pair are taught, and the verdicts are balanced.
    assert seen == {FIRST: 20, SECOND: 20, TIE: 20}
    assert verdict_examples(TINY_PAIRWISE, pairs, 60, seed=3) == examples


def _shown(prompt: str) -> tuple[str, str]:
    lines = prompt.splitlines()
    return lines[lines.index("[回答1]") + 1], lines[lines.index("[回答2]") + 1]


def test_examples_need_a_pairwise_last_line_prompt_and_some_pairs():
    pair = [Pair(QUESTION, ON_TOPIC, OFF_TOPIC)]
    with pytest.raises(ValueError, match=NOT_PAIRWISE.format(name="ja_grading", kind="grading")):
        verdict_examples(JA_GRADING, pair, 4)
    brackets = TINY_PAIRWISE.__class__(**{**TINY_PAIRWISE.__dict__, "verdict_format": BRACKETS_ABC})
    with pytest.raises(
        ValueError, match=NOT_LAST_LINE.format(name="tiny_pairwise", format=BRACKETS_ABC)
    ):
        verdict_examples(brackets, pair, 4)
    with pytest.raises(ValueError, match=NO_PAIRS):
        verdict_examples(TINY_PAIRWISE, [], 4)


def test_corpus_pairs_are_the_projects_own_text_and_mostly_clear_cases():
    pairs = corpus_pairs(seed=0)
    with (FIXTURES / "tiny_corpus_ja.jsonl").open(encoding="utf-8") as handle:
        questions = {json.loads(line)["question"] for line in handle if line.strip()}
    assert len(pairs) == len(questions)
    assert {p.question for p in pairs} == questions
    verdict_counts = Counter(preferred(p.question, p.answer_x, p.answer_y) for p in pairs)
    assert verdict_counts[TIE] < verdict_counts[FIRST] + verdict_counts[SECOND]
    assert corpus_pairs(seed=0, limit=10) == pairs[:10]


def test_the_short_prompt_fits_the_tiny_models_context_where_the_default_does_not(
    tiny_model_dir,
):
    from generation.engine import render
    from generation.engine.loading import load_tokenizer
    from generation.engine.tiny import LINE_SFT

    assert verdicts.problems(TINY_PAIRWISE) == {}
    tokenizer = load_tokenizer(str(tiny_model_dir))
    # The longest question of the fixture set (195 tokens) and two answers as long as the demo
    # lets the tiny models write (ANSWER_TOKENS). The tiny tokenizer splits at every whitespace
    # character first, so a prompt's tokens are the empty prompt's plus those filled in.
    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        question = max((json.loads(line)["text"] for line in handle), key=len)

    def tokens(judge) -> int:
        text = verdicts.render(judge, question=" ", answer_1=" ", answer_2=" ")
        messages = render.conversation([join_instruction(text)], [])
        empty = len(render.encode_prompt(LINE_SFT, messages, tokenizer))
        return empty + len(render.tokenize(tokenizer, question)) + 2 * ANSWER_TOKENS

    context = MODEL_SHAPE["max_position_embeddings"]
    room_for_verdict = 48
    assert tokens(TINY_PAIRWISE) + room_for_verdict <= context
    assert tokens(JA_PAIRWISE) > context


@pytest.mark.slow  # teaches the tiny judge (300 examples) and judges a study with it
@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.usefixtures("one_torch_thread", "quiet_heartbeat")
def test_a_taught_tiny_judge_parses_most_verdicts_on_fresh_pairs(tiny_model_dir, capsys):
    """The whole path: teach with the app's fine-tuning, then a judge run (inline) over a study
    of the tiny models' own answers to questions the teaching never showed."""
    from generation.models import FineTuneRun
    from judging.models import JudgeRun, Judgment
    from judging.runs import judge_run_create, judge_run_execute
    from judging.teaching import JUDGE_DEFAULTS, teach_judge, tiny_pairwise_prompt
    from tests.generation.conftest import register_tiny

    tiny = register_tiny(tiny_model_dir, max_new_tokens=64)
    study = _tiny_study(tiny, questions=12)
    examples = verdict_examples(TINY_PAIRWISE, corpus_pairs(seed=0), 300, seed=0)

    taught = teach_judge(base=tiny, name="tiny-judge", examples=examples)

    assert taught.run.status == FineTuneRun.Status.SUCCEEDED
    assert taught.run.method == FineTuneRun.Method.FULL
    assert taught.run.sources.get().dataset.examples.count() == 300
    assert taught.model.name == "tiny-judge"
    assert taught.model.generation_defaults == JUDGE_DEFAULTS

    prompt = tiny_pairwise_prompt()
    assert (prompt.name, prompt.version, prompt.template) == (
        "tiny_pairwise",
        1,
        TINY_PAIRWISE.template,
    )
    shares = {}
    for judge in (taught.model, tiny):
        run = judge_run_create(
            judge=judge,
            study=study,
            prompt=prompt,
            params={"max_new_tokens": 48},
            max_attempts=1,
            enqueue=False,
        )
        judge_run_execute(run.pk)
        run.refresh_from_db()
        assert run.status == JudgeRun.Status.SUCCEEDED
        rows = Judgment.objects.filter(run=run)
        assert rows.count() == run.total == 2 * study.comparisons.count()
        shares[judge.name] = rows.exclude(verdict=Judgment.Verdict.UNPARSABLE).count() / run.total
    with capsys.disabled():
        print(
            f"\ntaught tiny judge: {shares['tiny-judge']:.0%} of verdicts parsed on fresh pairs "
            f"(untaught: {shares['tiny']:.0%}); teaching took {taught.seconds:.1f} s "
            f"for {taught.examples} examples"
        )
    assert shares["tiny-judge"] > 0.5
    assert shares["tiny"] < shares["tiny-judge"]


def _tiny_study(tiny, *, questions: int):
    """Two generation runs of the tiny model's weights (registered twice: a study compares
    models; seeds 1 and 2, sampled) over fixture questions the teaching corpus does not
    contain, and a study of them."""
    from annotation.studies import study_create
    from generation.importers import ParsedQuestion
    from generation.registry import language_model_register, prompt_set_create
    from generation.runs import generation_run_create, generation_run_execute

    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    taught_on = {p.question for p in corpus_pairs()}
    fresh = [text for text in texts if text not in taught_on][:questions]
    prompt_set = prompt_set_create(
        name="fresh questions",
        questions=[ParsedQuestion(line=i, text=t) for i, t in enumerate(fresh, start=1)],
    )
    other = language_model_register(
        name="tiny-again", name_or_path=tiny.name_or_path, prompt_format=tiny.prompt_format
    )
    runs = []
    for model, seed in ((tiny, 1), (other, 2)):
        run = generation_run_create(
            model=model,
            prompt_set=prompt_set,
            params={"do_sample": True, "top_p": 0.9},
            seed=seed,
            enqueue=False,
        )
        runs.append(generation_run_execute(run_id=run.pk))
    return study_create(name="fresh pairs", runs=runs)
