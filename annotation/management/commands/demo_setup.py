"""Demo data for `make demo`; safe to run again (it reuses what exists, resets passwords)."""

from __future__ import annotations

import secrets
import time

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.models import Study
from annotation.studies import study_create
from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.registry import language_model_register, prompt_set_import, storage_relative
from generation.runs import generation_run_create, generation_run_execute

PROMPT_SET = "demo: 100 Japanese questions"
STUDY = "demo study"
SEEDS = (0, 1)


class Command(BaseCommand):
    help = (
        "Load the fixture prompt set, build two tiny models (seeds 0 and 1), generate their "
        "answers through the worker, open a demo study, create an admin and an annotator."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--inline", action="store_true", help="generate in this process (no worker needed)"
        )

    def handle(self, *args, inline: bool, **options):
        from generation.engine.tiny import build_tiny_model

        prompt_set = PromptSet.objects.filter(name=PROMPT_SET).first()
        if prompt_set is None:
            data = (settings.BASE_DIR / "fixtures" / "prompts_ja.jsonl").read_bytes()
            prompt_set = prompt_set_import(
                name=PROMPT_SET, data=data, filename="fixtures/prompts_ja.jsonl"
            )
        self.stdout.write(
            f"prompt set {prompt_set.name!r}: {prompt_set.questions.count()} questions"
        )

        runs = []
        for seed in SEEDS:
            name = f"tiny-neox-seed{seed}"
            path = settings.MODEL_STORAGE / f"tiny-neox-seed{seed}"
            self.stdout.write(f"building {name} in {path} …")
            build_tiny_model(path, seed=seed)
            model = LanguageModel.objects.filter(name=name).first() or (
                language_model_register(
                    name=name,
                    name_or_path=storage_relative(path),
                    prompt_format="line_sft",
                    maker="demo",
                    generation_defaults={"max_new_tokens": 96, "do_sample": True, "top_p": 0.9},
                )
            )
            runs.append(self._run_for(model, prompt_set, seed, inline))
        runs = [self._wait(run) for run in runs]

        study = Study.objects.filter(name=STUDY).first()
        if study is None:
            study = study_create(
                name=STUDY,
                runs=runs,
                votes_per_comparison=3,
                instructions=(
                    "質問に対する2つの回答を読み、より役に立つ方を選んでください。"
                    "差がなければ「どちらも良い」か「どちらも悪い」を選んでください。"
                ),
                open_now=True,
            )
        self.stdout.write(f"study {study.name!r} is {study.status}: /annotate/{study.pk}/")

        admin_password = self._user("admin", staff=True)
        annotator_password = self._user("annotator", staff=False)
        self.stdout.write(
            self.style.SUCCESS(
                "\nadmin      user: admin      password: "
                f"{admin_password}   http://127.0.0.1:8000/admin/\n"
                "annotator  user: annotator  password: "
                f"{annotator_password}   http://127.0.0.1:8000/annotate/"
            )
        )

    def _run_for(self, model, prompt_set, seed: int, inline: bool) -> GenerationRun:
        existing = (
            GenerationRun.objects.filter(model=model, prompt_set=prompt_set)
            .exclude(status__in=[GenerationRun.Status.FAILED, GenerationRun.Status.CANCELLED])
            .first()
        )
        if existing is not None:
            return existing
        run = generation_run_create(
            model=model, prompt_set=prompt_set, seed=seed, batch_size=16, enqueue=not inline
        )
        if inline:
            generation_run_execute(run_id=run.pk)
        return run

    def _wait(self, run: GenerationRun) -> GenerationRun:
        with tqdm(total=run.total, desc=f"answers of {run.model.name}", unit="answer") as bar:
            while True:
                run.refresh_from_db()
                bar.update(run.done - bar.n)
                if run.status not in GenerationRun.ACTIVE:
                    break
                time.sleep(1)
        if run.status != GenerationRun.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error.strip()[-800:]}")
        return run

    def _user(self, username: str, *, staff: bool) -> str:
        password = secrets.token_urlsafe(9)
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = staff
        user.set_password(password)
        user.save()
        if not staff:
            user.groups.add(Group.objects.get_or_create(name="annotators")[0])
        return password
