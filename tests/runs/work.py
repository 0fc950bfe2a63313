"""One row of every kind of work, written straight to the database in the states a test needs
(nothing runs them: the staff lists, run pages and provenance rules only read rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from annotation.models import Study
from benchmarks.models import BenchmarkRun
from evolution.models import EvolutionRun
from generation.models import (
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    LanguageModel,
    PromptSet,
    Question,
)
from generation.templates import template_latest
from judging.models import JudgePrompt, JudgeRun
from sweeps.models import Sweep


@dataclass
class Work:
    model: LanguageModel
    generation: GenerationRun
    finetune: FineTuneRun
    judge: JudgeRun
    grading: JudgeRun
    evolution: EvolutionRun
    benchmark: BenchmarkRun
    sweep: Sweep

    def rows(self) -> dict[str, object]:
        return {
            "generation": self.generation,
            "finetune": self.finetune,
            "judge": self.judge,
            "grading": self.grading,
            "evolution": self.evolution,
            "benchmark": self.benchmark,
            "sweep": self.sweep,
        }


def one_of_every_kind() -> Work:
    """A running generation run (3 of 10 answers, started 5 minutes ago), a queued fine-tune, a
    failed judge run, a succeeded grading run, a cancelled evolution run, a succeeded benchmark
    run and a running sweep."""
    now = timezone.now()
    model = LanguageModel.objects.create(name="kogera-3b-inst", name_or_path="kogera/3b")
    judge = LanguageModel.objects.create(name="hakucho-judge", name_or_path="hakucho/judge")
    prompt_set = PromptSet.objects.create(name="asa-no-shitsumon")
    Question.objects.create(prompt_set=prompt_set, position=1, text="朝の散歩のこつは？")
    study = Study.objects.create(name="kogera-study", prompt_set=prompt_set)
    pairwise = JudgePrompt.objects.create(
        name="staff-pairwise", template="{{ question }} {{ answer_1 }} {{ answer_2 }}"
    )
    grader = JudgePrompt.objects.create(
        name="staff-grading",
        kind=JudgePrompt.Kind.GRADING,
        verdict_format=JudgePrompt.VerdictFormat.SCORE,
        template="{{ question }} {{ answer }}",
    )
    dataset = InstructionDataset.objects.create(name="tane-data")
    generation = GenerationRun.objects.create(
        model=model,
        prompt_set=prompt_set,
        status=GenerationRun.Status.RUNNING,
        done=3,
        total=10,
        params={"temperature": 0.7},
        template=template_latest("line_sft"),
        started_at=now - timedelta(minutes=5),
        heartbeat_at=now,
    )
    finetune = FineTuneRun.objects.create(base_model=model, model_name="kogera-ft", total_steps=40)
    failed = JudgeRun.objects.create(
        judge=judge,
        study=study,
        prompt=pairwise,
        status=JudgeRun.Status.FAILED,
        error="the judge endpoint refused the connection",
        done=4,
        total=12,
        started_at=now - timedelta(minutes=30),
        finished_at=now - timedelta(minutes=20),
    )
    grading = JudgeRun.objects.create(
        judge=judge,
        study=study,
        prompt=grader,
        status=JudgeRun.Status.SUCCEEDED,
        done=6,
        total=6,
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=1),
    )
    evolution = EvolutionRun.objects.create(
        source=dataset,
        model=model,
        answer_model=model,
        name="tane-evolved",
        status=EvolutionRun.Status.CANCELLED,
        done=2,
        total=8,
        finished_at=now,
    )
    benchmark = BenchmarkRun.objects.create(
        model=model,
        tasks=["jcommonsenseqa"],
        status=BenchmarkRun.Status.SUCCEEDED,
        done=1,
        total=1,
        started_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=1),
    )
    sweep = Sweep.objects.create(
        name="kogera-sweep", base_model=model, prompt_set=prompt_set, judge=judge
    )
    return Work(model, generation, finetune, failed, grading, evolution, benchmark, sweep)
