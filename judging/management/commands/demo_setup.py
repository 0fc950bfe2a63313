"""Demo data for `make demo`; safe to run again (it reuses what exists, resets passwords).

Both halves of a LINE-style evaluation: three tiny models (seeds 0, 1, 2) answer the fixture
questions and a study of them opens for people; a small judge (the seed-0 tiny model taught the
verdict format with the app's own fine-tuning, judging/teaching.py) judges every comparison in
both orders, so the results page has the judge's table from the start and the agreement view
fills in as the demo annotator votes.
"""

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
from judging.models import JudgeRun
from judging.runs import judge_run_create, judge_run_execute
from judging.teaching import (
    TINY_PAIRWISE,
    corpus_pairs,
    teach_judge,
    tiny_pairwise_prompt,
    verdict_examples,
)

PROMPT_SET = "demo: 100 Japanese questions"
STUDY = "demo study: three models"
SEEDS = (0, 1, 2)  # three models, as in LINE's study
JUDGE = "tiny-judge"
TEACHING_EXAMPLES = 300
JUDGE_PARAMS = {"max_new_tokens": 48}


class Command(BaseCommand):
    help = (
        "Load the fixture prompt set, build three tiny models (seeds 0, 1, 2), generate their "
        "answers through the worker, open a demo study, teach a tiny judge and judge the study "
        "with it, create an admin and an annotator."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--inline",
            action="store_true",
            help="generate and judge in this process (no worker needed)",
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
        runs = [self._wait(run, what=f"answers of {run.model.name}") for run in runs]

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
        judged = self._judge_run(self._judge(runs[0].model), study, inline)
        self.stdout.write(
            f"judge run {judged.pk} ({judged.judge.name}, {judged.prompt}): {judged.status}, "
            f"{judged.done}/{judged.total} verdicts; results: /studies/{study.pk}/results/"
        )

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

    def _judge(self, base: LanguageModel) -> LanguageModel:
        """The demo judge: the seed-0 model taught the verdict format (once; reused after)."""
        import torch

        judge = LanguageModel.objects.filter(name=JUDGE).first()
        if judge is not None:
            return judge
        self.stdout.write(f"teaching {JUDGE} the verdict format ({TEACHING_EXAMPLES} examples) …")
        examples = verdict_examples(TINY_PAIRWISE, corpus_pairs(), TEACHING_EXAMPLES)
        # The tiny model gains nothing from a second thread; on a busy machine it only contends.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            taught = teach_judge(base=base, name=JUDGE, examples=examples)
        finally:
            torch.set_num_threads(threads)
        self.stdout.write(f"taught {JUDGE} in {taught.seconds:.0f}s")
        return taught.model

    def _judge_run(self, judge: LanguageModel, study: Study, inline: bool) -> JudgeRun:
        """A finished judge run of ``judge`` over the study (reused when one exists)."""
        run = (
            JudgeRun.objects.filter(judge=judge, study=study)
            .exclude(status__in=[JudgeRun.Status.FAILED, JudgeRun.Status.CANCELLED])
            .first()
        )
        if run is None:
            run = judge_run_create(
                judge=judge,
                study=study,
                prompt=tiny_pairwise_prompt(),
                params=JUDGE_PARAMS,
                enqueue=not inline,
            )
            if inline:
                judge_run_execute(run.pk)
        return self._wait(run, what=f"verdicts of {judge.name}", unit="verdict")

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

    def _wait(self, run, *, what: str, unit: str = "answer"):
        """Wait for a generation or judge run to finish, with a progress bar."""
        with tqdm(total=run.total, desc=what, unit=unit) as bar:
            while True:
                run.refresh_from_db()
                bar.update(run.done - bar.n)
                if run.status not in type(run).ACTIVE:
                    break
                time.sleep(1)
        if run.status != type(run).Status.SUCCEEDED:
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
