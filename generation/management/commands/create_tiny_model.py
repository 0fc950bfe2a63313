from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

MANY_SEEDS_ONE_DIR = "several seeds need {seed} in DIR, one directory per seed"


class Command(BaseCommand):
    help = (
        "Put the project's tiny GPT-NeoX model and BPE tokenizer in DIR (trained briefly on "
        "the project's own Japanese question/answer text; deterministic for a seed). Built once "
        "per machine into a cache ($TINY_MODEL_CACHE, else ~/.cache/pairwise-eval/tiny) and "
        "copied from there. With several --seed, DIR names each one with {seed}, and the "
        "missing builds run side by side, one per core."
    )

    def add_arguments(self, parser):
        parser.add_argument("dir", help="target directory; {seed} stands for the seed")
        parser.add_argument(
            "--seed", type=int, action="append", help="the seed (repeat for several models)"
        )
        parser.add_argument("--steps", type=int, default=None, help="training steps")
        parser.add_argument(
            "--no-cache", action="store_true", help="build in DIR itself, without the cache"
        )

    def handle(self, *args, dir: str, seed: list[int] | None, steps, no_cache: bool, **options):
        from generation.engine.tiny import build_tiny_model, tiny_models

        seeds = list(dict.fromkeys(seed or [0]))
        if len(seeds) > 1 and "{seed}" not in dir:
            raise CommandError(MANY_SEEDS_ONE_DIR)
        targets = {s: Path(dir.replace("{seed}", str(s))) for s in seeds}
        kwargs = {} if steps is None else {"steps": steps}
        if no_cache:
            for s, out in targets.items():
                build_tiny_model(out, seed=s, log=self.stdout.write, **kwargs)
        else:
            tiny_models(targets, log=self._say, **kwargs)
        for out in targets.values():
            self.stdout.write(self.style.SUCCESS(f"tiny model saved in {out}"))

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
