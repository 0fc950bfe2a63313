"""An LLM judge's side of a study: judge prompts as data, judge runs, and every verdict.

A judge run (judge model x study) asks the judge about each comparison twice, once with each
answer shown first (``Judgment.first``), or grades each answer against its question's reference.
A comparison whose two verdicts both parsed becomes judge votes (``annotation.Vote`` with voter
``judge``, linked from ``Judgment.vote``), kept apart from people's and never counted against K.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import Comparison, Study, Vote
from evalsite.runs.models import CountedRun
from generation.models import Answer, GeneratesWithEngine, LanguageModel


class JudgePrompt(models.Model):
    """What the judge is asked and how its verdict is read; versioned like prompt templates (a
    version a run points at is never edited: saving makes the next version)."""

    class Kind(models.TextChoices):
        PAIRWISE = "pairwise", "pairwise: which of two answers is better"
        GRADING = "grading", "grading: a score for one answer"

    class VerdictFormat(models.TextChoices):
        # Pairwise: the last line that is only 1, 2 or 3 (answer 1 better, answer 2, tie).
        LAST_LINE_123 = "last_line_123", "last line 1 / 2 / 3"
        # Pairwise, MT-Bench's: the last [[A]], [[B]] or [[C]] (tie) in the output.
        BRACKETS_ABC = "brackets_abc", "[[A]] / [[B]] / [[C]]"
        # Pairwise, FastChat's with scores: the last [[rating_a,rating_b]]; higher wins.
        BRACKETS_TWO_RATINGS = "brackets_two_ratings", "[[rating_a,rating_b]]"
        # Grading: the last integer in [score_min, score_max] in the output ([[4]], 評価: 4, 4).
        SCORE = "score", "a score (last integer in range)"
        # Grading, MT-Bench's: the last [[rating]] in the output ([[8]], [[8.5]]).
        BRACKETS_RATING = "brackets_rating", "[[rating]]"

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PAIRWISE)
    system_prompt = models.TextField(blank=True, help_text="Blank: no system prompt")
    template = models.TextField(
        help_text="Jinja2 (sandboxed) over question, answer_1, answer_2 (pairwise) or answer "
        "(grading), reference and criteria (blank when the question has none)"
    )
    verdict_format = models.CharField(
        max_length=20, choices=VerdictFormat.choices, default=VerdictFormat.LAST_LINE_123
    )
    score_min = models.PositiveSmallIntegerField(default=1)
    score_max = models.PositiveSmallIntegerField(default=5)
    category = models.CharField(
        max_length=100, blank=True, help_text="What it is for (FastChat's category: general, math)"
    )
    # Both read from the template when it is saved (prompts/versions.py), never set by hand:
    # whether it shows the whole conversation (the turns before the last too), and whether it
    # shows the question's reference answer (FastChat's {ref_answer_1}).
    multi_turn = models.BooleanField(default=False, help_text="Shows every turn of a conversation")
    reference = models.BooleanField(default=False, help_text="Shows the reference answer")
    source = models.CharField(max_length=500, blank=True, help_text="File it was loaded from")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="judging_judgeprompt_name_version"
            ),
            models.CheckConstraint(condition=~Q(name=""), name="judging_judgeprompt_name_set"),
            models.CheckConstraint(
                condition=~Q(template=""), name="judging_judgeprompt_template_set"
            ),
            models.CheckConstraint(
                condition=Q(
                    kind="pairwise",
                    verdict_format__in=["last_line_123", "brackets_abc", "brackets_two_ratings"],
                )
                | Q(kind="grading", verdict_format__in=["score", "brackets_rating"]),
                name="judging_judgeprompt_format_fits_kind",
            ),
            models.CheckConstraint(
                condition=Q(score_min__lt=models.F("score_max")),
                name="judging_judgeprompt_score_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class JudgeRun(CountedRun, GeneratesWithEngine):
    """A judge model over a study's comparisons (pairwise, both orders) or answers (grading)."""

    class Inconsistent(models.TextChoices):
        # MT-Bench: a comparison whose two orders disagree counts as a tie (its two votes, one
        # win each way, are kept). Exclude: it gets no judge votes at all.
        TIE = "tie", "count as a tie"
        EXCLUDE = "exclude", "leave out"

    judge = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="judge_runs")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="judge_runs")
    prompt = models.ForeignKey(JudgePrompt, on_delete=models.PROTECT, related_name="runs")
    # The prompts a question gets, by its number of turns and category (judging/plan.py): the
    # multi-turn ones for conversations of more than one turn (the prompt itself when it shows
    # every turn), the reference ones for questions of ``reference_categories`` (MT-Bench:
    # math, reasoning and coding are graded against a reference answer).
    multi_turn_prompt = models.ForeignKey(
        JudgePrompt, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reference_prompt = models.ForeignKey(
        JudgePrompt, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reference_multi_turn_prompt = models.ForeignKey(
        JudgePrompt, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reference_categories = models.JSONField(default=list, blank=True)
    # Off (the default): the judge sees the whole conversation. On: only the last user turn and
    # the replies to it, as before; the results page says so.
    last_turn_only = models.BooleanField(default=False)
    # Imported verdicts (FastChat model_judgment files): the file they came from; blank for a
    # run the app asked a judge for.
    source = models.CharField(max_length=500, blank=True)
    # The judge model's own template version (its chat format around the judge prompt).
    template = models.ForeignKey(
        "generation.PromptTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # Pairwise runs: these comparisons only (ids); empty: every comparison of the study but gold.
    comparison_ids = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Decoding of the judge")
    seed = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=8)
    max_attempts = models.PositiveSmallIntegerField(
        default=3, help_text="Tries per verdict before it is recorded as unparsable"
    )
    inconsistent = models.CharField(
        max_length=10, choices=Inconsistent.choices, default=Inconsistent.TIE
    )
    # done / total (CountedRun) count verdicts: two per comparison (pairwise), one per answer
    # (grading).
    requests = models.PositiveIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True)

    class Meta(CountedRun.Meta):
        indexes = [CountedRun.stale_check_index("judging_run_status_hb")]
        constraints = [
            *CountedRun.Meta.constraints,
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="judging_judgerun_attempts_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"judge run {self.pk}: {self.judge.name} on {self.study.name}"

    @property
    def grading(self) -> bool:
        return self.prompt.kind == JudgePrompt.Kind.GRADING


class Judgment(models.Model):
    """One verdict of a judge run: a comparison seen in one order, or one answer graded."""

    class Verdict(models.TextChoices):
        # In the comparison's own terms (a, b), whatever order the judge saw them in.
        A = "a", "a better"
        TIE = "tie", "tie"
        B = "b", "b better"
        UNPARSABLE = "unparsable", "unparsable"
        SCORED = "scored", "scored (grading)"

    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="judgments")
    comparison = models.ForeignKey(
        Comparison, null=True, blank=True, on_delete=models.CASCADE, related_name="judgments"
    )
    # Which of the comparison's answers the judge was shown as answer 1.
    first = models.CharField(max_length=1, blank=True, choices=[("a", "a"), ("b", "b")])
    answer = models.ForeignKey(
        Answer, null=True, blank=True, on_delete=models.CASCADE, related_name="judgments"
    )
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    # MT-Bench's ratings may be fractional ([[8.5]]); the scale is the asking prompt's.
    score = models.FloatField(null=True, blank=True)
    # The prompt that asked for this verdict (the run's, or its multi-turn or reference one).
    prompt = models.ForeignKey(
        JudgePrompt, null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    attempts = models.PositiveSmallIntegerField(default=1)
    raw_output = models.TextField(blank=True, help_text="The judge's output (its last try)")
    outputs = models.JSONField(default=list, blank=True, help_text="Every try's output, in order")
    prompt_text = models.TextField(blank=True, help_text="The rendered judge prompt")
    # The judge vote this verdict became (none while the other order is missing, for unparsable
    # verdicts, and for inconsistent ones when the run leaves those out).
    vote = models.OneToOneField(
        Vote, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgment"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "comparison", "first", "answer"]
        constraints = [
            # Each comparison judged exactly once in each order; each answer graded once.
            models.UniqueConstraint(
                fields=["run", "comparison", "first"],
                condition=Q(comparison__isnull=False),
                name="judging_judgment_one_per_order",
            ),
            models.UniqueConstraint(
                fields=["run", "answer"],
                condition=Q(answer__isnull=False),
                name="judging_judgment_one_per_answer",
            ),
            models.CheckConstraint(
                condition=Q(
                    comparison__isnull=False,
                    answer__isnull=True,
                    first__in=["a", "b"],
                    verdict__in=["a", "tie", "b", "unparsable"],
                    score__isnull=True,
                )
                | Q(
                    comparison__isnull=True,
                    answer__isnull=False,
                    first="",
                    verdict="scored",
                    score__isnull=False,
                )
                | Q(
                    comparison__isnull=True,
                    answer__isnull=False,
                    first="",
                    verdict="unparsable",
                    score__isnull=True,
                ),
                name="judging_judgment_shape",
            ),
        ]

    def __str__(self) -> str:
        return f"judgment {self.pk} of run {self.run_id}: {self.verdict}"
