import json

from django.core.management.base import BaseCommand, CommandError

from generation import prompts
from generation.errors import ServiceError
from generation.models import LanguageModel
from generation.registry import language_model_register


class Command(BaseCommand):
    help = "Register a language model (hub id or a path relative to MODEL_STORAGE)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="admin-facing name (never shown to annotators)")
        parser.add_argument("--path", required=True, help="hub id or path of the weights")
        parser.add_argument("--prompt-format", required=True, choices=prompts.FORMATS)
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

    def handle(self, *args, **opts):
        try:
            defaults = json.loads(opts["defaults"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--defaults is not valid JSON ({exc.msg})") from None
        if not isinstance(defaults, dict):
            raise CommandError("--defaults must be a JSON object")
        base = None
        if opts["base"]:
            base = LanguageModel.objects.filter(name=opts["base"]).first()
            if base is None:
                raise CommandError(f"no model named {opts['base']!r}")
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
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"registered model {model.name!r} (id {model.pk})"))
