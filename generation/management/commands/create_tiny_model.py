from pathlib import Path

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Build the project's tiny GPT-NeoX model and BPE tokenizer in DIR (trained briefly on "
        "the project's own Japanese question/answer text; deterministic for a seed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("dir", type=Path)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, default=None, help="training steps")

    def handle(self, *args, dir: Path, seed: int, steps: int | None, **options):
        from generation.engine.tiny import build_tiny_model

        kwargs = {"seed": seed, "log": self.stdout.write}
        if steps is not None:
            kwargs["steps"] = steps
        out = build_tiny_model(dir, **kwargs)
        self.stdout.write(self.style.SUCCESS(f"tiny model saved in {out}"))
