from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.management.options import json_object, named
from generation.models import LanguageModel
from generation.registry import language_model_register


class Command(BaseCommand):
    help = (
        "Register a language model: weights (--path: hub id or a path relative to MODEL_STORAGE) "
        "or a served model (--endpoint URL --endpoint-model ID [--api-key-env VAR])."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="admin-facing name (never shown to annotators)")
        parser.add_argument("--path", default="", help="hub id or path of the weights")
        parser.add_argument(
            "--prompt-format",
            required=True,
            help="prompt template name (a preset such as line_sft, rinna, calm2, llm_jp, "
            "elyza_llama2, alpaca_ja, chat_template, plain, or one made in the admin)",
        )
        parser.add_argument("--revision", default="")
        parser.add_argument("--maker", default="", help="organisation that made the model")
        parser.add_argument(
            "--defaults",
            default="{}",
            help="generation defaults as JSON, e.g. '{\"max_new_tokens\": 256}'",
        )
        parser.add_argument("--base", default="", help="base model name (for an adapter)")
        parser.add_argument("--adapter", default="", help="LoRA adapter path")
        parser.add_argument("--trust-remote-code", action="store_true")
        served = parser.add_argument_group("served models (an OpenAI-compatible endpoint)")
        served.add_argument(
            "--endpoint", default="", help="base URL of chat completions, e.g. http://host:8000/v1"
        )
        served.add_argument("--endpoint-model", default="", help="the model id the server serves")
        served.add_argument(
            "--api-key-env",
            default="",
            help="NAME of the environment variable holding the API key (the key is never stored)",
        )
        served.add_argument("--concurrency", type=int, default=4, help="requests in flight")
        served.add_argument(
            "--requests-per-minute", type=int, default=None, help="rate limit (default: none)"
        )

    def handle(self, *args, **opts):
        defaults = json_object(opts["defaults"], "--defaults")
        if bool(opts["path"]) == bool(opts["endpoint"]):
            raise CommandError("give either --path (weights) or --endpoint (a served model)")
        if opts["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        if opts["requests_per_minute"] is not None and opts["requests_per_minute"] < 1:
            raise CommandError("--requests-per-minute must be at least 1")
        endpoint = {}
        if opts["endpoint"]:
            endpoint = {
                "endpoint_url": opts["endpoint"],
                "endpoint_model": opts["endpoint_model"],
                "api_key_env": opts["api_key_env"],
                "endpoint_concurrency": opts["concurrency"],
                "endpoint_requests_per_minute": opts["requests_per_minute"],
            }
        elif opts["endpoint_model"] or opts["api_key_env"]:
            raise CommandError("--endpoint-model and --api-key-env go with --endpoint")
        base = named(LanguageModel, opts["base"], "model") if opts["base"] else None
        try:
            model = language_model_register(
                name=opts["name"],
                name_or_path=opts["path"],
                prompt_format=opts["prompt_format"],
                revision=opts["revision"],
                maker=opts["maker"],
                generation_defaults=defaults,
                trust_remote_code=opts["trust_remote_code"],
                base_model=base,
                adapter_path=opts["adapter"],
                **endpoint,
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"registered model {model.name!r} (id {model.pk})"))
