"""A model is trained and evaluated in the same format: the tiny model fine-tuned through the app
with a template generates with that very template version, and the prompt it was trained on is
the prompt generation gave it, token for token."""

from __future__ import annotations

import statistics

import pytest

from generation.engine import render
from generation.engine.examples import IGNORE_INDEX, encode_example, join_instruction
from generation.importers import ParsedQuestion
from generation.models import FineTuneLog, FineTuneRun, GenerationRun, PromptTemplate
from generation.registry import language_model_tokenizer, prompt_set_create
from generation.runs import generation_run_create, generation_run_execute
from generation.templates import as_template, template_update
from generation.training.finetune import (
    _finetune_inputs,
    finetune_run_create,
    finetune_run_execute,
)
from tests.generation.conftest import register_tiny

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db,
    pytest.mark.usefixtures("one_torch_thread", "quiet_heartbeat"),
]

QUICK_LORA = {
    "max_steps": 40,
    "learning_rate": 1e-2,
    "batch_size": 4,
    "gradient_accumulation": 1,
    "max_length": 128,
    "warmup_ratio": 0.1,
    "eval_fraction": 0.0,
    "save_steps": 40,
}


def test_a_model_tuned_with_a_template_generates_with_it_token_for_token(
    tiny_model_dir, fixture_dataset
):
    # calm2's "USER: …\nASSISTANT: " is not the LINE layout the tiny model was built on.
    base = register_tiny(tiny_model_dir, prompt_format="calm2", max_new_tokens=24)
    run = finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], params=QUICK_LORA, enqueue=False
    )
    calm2 = PromptTemplate.objects.get(name="calm2", version=1)
    assert run.template == calm2
    finetune_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error
    losses = list(
        run.log_entries.filter(kind=FineTuneLog.Kind.TRAIN)
        .order_by("step")
        .values_list("loss", flat=True)
    )
    assert statistics.mean(losses[-10:]) < statistics.mean(losses[:10])

    # The tuned model inherits the template name, so it generates in the format it learnt.
    tuned = run.result_model
    assert tuned.prompt_format == "calm2"

    # Ask the tuned model the first training instructions.
    inputs = _finetune_inputs(run)  # what the worker trained on: template, tokenizer, examples
    assert inputs["template"] == as_template(calm2)
    examples = inputs["examples"][:6]
    prompt_set = prompt_set_create(
        name="trained-on",
        questions=[
            ParsedQuestion(line=i, text=join_instruction(e.instruction, e.input))
            for i, e in enumerate(examples, start=1)
        ],
    )
    generation = generation_run_create(
        model=tuned, prompt_set=prompt_set, batch_size=6, enqueue=False
    )
    generation = generation_run_execute(run_id=generation.pk)
    assert generation.status == GenerationRun.Status.SUCCEEDED, generation.error
    assert generation.template == run.template == calm2

    # An edit now leaves the version both runs recorded as it was.
    newer = template_update(template=calm2, changes={"stop_strings": ["USER:", "\nUSER"]})
    assert newer.version == 2
    run.refresh_from_db()
    generation.refresh_from_db()
    assert run.template == generation.template == calm2
    assert PromptTemplate.objects.get(pk=calm2.pk).stop_strings == ["USER:"]

    tokenizer = language_model_tokenizer(model=tuned)
    answers = {a.question.position: a for a in generation.answers.select_related("question")}
    assert sorted(answers) == list(range(1, len(examples) + 1))
    for position, example in enumerate(examples, start=1):
        # The training example's prompt: every token the loss leaves out.
        encoded = encode_example(
            inputs["tokenizer"], inputs["template"], example, max_length=1 << 20
        )
        trained_prompt = [
            token
            for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
            if label == IGNORE_INDEX
        ]
        # The generation prompt of the same question, through the one path to prompt tokens,
        # with the template version the generation run recorded.
        messages = render.conversation([answers[position].question.text], [])
        generated_prompt = render.encode_prompt(
            as_template(generation.template), messages, tokenizer
        )
        assert trained_prompt == generated_prompt, example.instruction
        # ...and it is the prompt the answer's provenance says generation rendered.
        answer = answers[position]
        assert render.tokenize(tokenizer, answer.prompt_text) == generated_prompt
        assert answer.prompt_tokens == len(generated_prompt)
        assert answer.prompt_text.startswith("USER: ") and answer.prompt_text.endswith(
            "\nASSISTANT: "
        )
