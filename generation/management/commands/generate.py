from evalsite.runs.commands import RunCommand
from generation.management.options import json_value, named
from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.runs import generation_run_create


class Command(RunCommand):
    help = (
        "Queue a generation run (model x prompt set): weights on the gpu queue, endpoints on "
        "default; --wait shows progress."
    )

    inline_help = "generate in this process instead of a worker (no broker needed)"
    splittable = True

    def add_run_options(self, parser):
        parser.add_argument("--model", required=True, help="registered model name")
        parser.add_argument("--prompt-set", required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument(
            "--engine",
            default="auto",
            choices=GenerationRun.Engine.values,
            help="weights: vLLM or transformers (auto: vLLM on a GPU worker that has it)",
        )
        parser.add_argument(
            "--params", default="{}", help="overrides as JSON, e.g. '{\"max_new_tokens\": 128}'"
        )

    def create_run(self, opts, *, enqueue):
        model = named(LanguageModel, opts["model"], "model")
        prompt_set = named(PromptSet, opts["prompt_set"], "prompt set")
        params = json_value(opts["params"], "--params")
        return generation_run_create(
            model=model,
            prompt_set=prompt_set,
            params=params,
            seed=opts["seed"],
            batch_size=opts["batch_size"],
            engine=opts["engine"],
            enqueue=enqueue,
            shards=opts["shards"],
        )

    def describe(self, run) -> str:
        model, prompt_set = run.model.name, run.prompt_set.name
        return f"run {run.pk}: {model} on {prompt_set}, {run.total} answers to make"
