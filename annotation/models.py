"""Studies, comparisons, assignments and votes (DESIGN.md, Data and Blinding).

Annotators only ever see a study id and an assignment token; everything that could name a model
(runs, answers, comparisons) stays on this side of the annotator loop (``annotation/loop``).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext

from evalsite.runs.models import CountedRun, Lease
from generation.models import Answer, GenerationRun, LanguageModel, PromptSet, Question


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    class Sampling(models.TextChoices):
        UNIFORM = "uniform"
        # Once every comparison has a vote, prefer those whose pair is least settled (Comparison.
        # sampling_weight); the fit weights each vote by 1 / its pick probability.
        ACTIVE = "active"
        # Adaptive K (ranking/adaptive.py): one person at a time per comparison; after each
        # vote the next is asked with a recorded probability (less once the votes agree with
        # the judge's consistent verdict), up to a cap set from how close its model pair is
        # (K on average: close pairs more, clear ones fewer). The fit weights each vote by
        # 1 / (cap x the chance it was asked).
        ADAPTIVE = "adaptive"
        # Staged, prediction-powered (ranking/designs.py ``staged``, live in annotation/
        # staging.py): the judge's verdicts on every comparison, people's votes in stages of a
        # human budget: a uniform pilot, then stages planned on the fit of everything before
        # them, each comparison drawn with a recorded probability; each vote weighs
        # share / (slots x probability).
        STAGED = "staged"

    # Admin-only, like model names: an admin may well call a study "line vs rinna".
    name = models.CharField(max_length=200, unique=True)
    title = models.CharField(
        max_length=200,
        blank=True,
        help_text="Shown to annotators (never name a model); blank shows “Study 12” (its id)",
    )
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="studies")
    runs = models.ManyToManyField(GenerationRun, through="StudyRun", related_name="studies")
    votes_per_comparison = models.PositiveIntegerField(
        default=3, help_text="Votes wanted per comparison (K); nobody is given more"
    )
    instructions = models.TextField(blank=True, help_text="Shown to annotators on every pair")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    sampling = models.CharField(
        max_length=10,
        choices=Sampling.choices,
        default=Sampling.UNIFORM,
        help_text=(
            "Active: after one vote each, prefer comparisons whose pair is least settled. "
            "Adaptive K: one person at a time; a comparison stops once its votes agree with "
            "the judge, and close pairs get more than K people, clear ones fewer. Staged: "
            "needs the judge's verdicts on every comparison; people's votes (the human "
            "budget) in a uniform pilot, then stages planned on the fit so far"
        ),
    )
    # Staged design: people's votes the whole study may ask for. Blank: the uniform design's
    # cost, K x comparisons (filled in when the study opens; fixed from then on).
    human_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Staged design: people's votes in all (blank: K x comparisons); set before "
        "opening",
    )
    sampling_floor = models.FloatField(
        default=0.2,
        help_text="Active sampling: every comparison keeps at least this share of the mean weight",
    )
    # The pool: who may annotate this study. Nobody chosen: the annotators group (staff always).
    pool_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="annotation_pools",
        help_text="Open to these users (with the groups below); none chosen: the annotators group",
    )
    pool_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="annotation_pools",
        help_text="Open to the members of these groups",
    )
    quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most votes one annotator may give here (blank: no limit)"
    )
    gold_rate = models.FloatField(
        default=0.1, help_text="Share of pairs given as gold checks while any are left to give"
    )
    fast_vote_seconds = models.FloatField(
        default=5.0, help_text="Votes faster than this (seconds) are flagged on the results page"
    )
    # Routing (judging/routing.py): an LLM judge sees every comparison first; people are given
    # those it was unsure of (inconsistent or unparsable) in full, and an audit sample of the rest.
    routing = models.BooleanField(
        default=False,
        help_text="Judge first: people vote on what the judge was unsure of, plus an audit sample",
    )
    audit_share = models.FloatField(
        default=0.2,
        help_text="Routing: share of the judge's consistent verdicts also given to people",
    )
    # Stored progress (loop/progress.py): comparisons still open (gold, or below their target),
    # kept by the votes that fill them; NULL, and the basis moved on, when something else
    # changed what is open (database triggers: routing's targets, comparisons added or removed,
    # gold changed, K changed, votes imported), so the next reader counts again.
    open_pairs = models.PositiveIntegerField(null=True, blank=True, editable=False)
    progress_basis = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        permissions = [
            # Results name the models: reading them is more than seeing a study's settings.
            ("export_study", "Can read results and export votes"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(votes_per_comparison__gte=1), name="annotation_study_votes_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "open", "closed"]),
                name="annotation_study_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0, gold_rate__lte=1),
                name="annotation_study_gold_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(fast_vote_seconds__gte=0), name="annotation_study_fast_vote_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(sampling__in=["uniform", "active", "adaptive", "staged"]),
                name="annotation_study_sampling_valid",
            ),
            models.CheckConstraint(
                condition=Q(sampling_floor__gt=0, sampling_floor__lte=1),
                name="annotation_study_sampling_floor_range",
            ),
            models.CheckConstraint(
                condition=Q(audit_share__gte=0, audit_share__lte=1),
                name="annotation_study_audit_share_range",
            ),
            models.CheckConstraint(
                condition=Q(human_budget__isnull=True) | Q(human_budget__gte=1),
                name="annotation_study_human_budget_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def public_title(self) -> str:
        return self.title or gettext("Study %(id)s") % {"id": self.pk}


class StudyRun(models.Model):
    """One succeeded run per model in a study; ``model`` is copied so the database can say so."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="study_runs")
    run = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["study", "run"]
        constraints = [
            models.UniqueConstraint(fields=["study", "run"], name="annotation_studyrun_unique_run"),
            # A study compares models: two runs of one model would pair a model with itself.
            models.UniqueConstraint(
                fields=["study", "model"], name="annotation_studyrun_one_run_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: run {self.run_id}"


class Comparison(models.Model):
    """Two models' answers to one question, in canonical order (run_a.id < run_b.id)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="comparisons")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="+")
    # The runs are copied from the answers so that the pair and its order are constraints.
    run_a = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    run_b = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    answer_a = models.ForeignKey(Answer, on_delete=models.PROTECT, related_name="+")
    answer_b = models.ForeignKey(Answer, on_delete=models.PROTECT, related_name="+")
    # How many votes (cast here or imported) this comparison has. Assignment reads it on every
    # request, so it is kept here instead of counted: it changes only in the same transaction
    # that adds votes, under this row's lock (loop.votes.vote_record, exchange.votes_import).
    vote_count = models.PositiveIntegerField(default=0, editable=False)
    # Active sampling: the claim picks among eligible comparisons with probability proportional
    # to this (refreshed from the cached fit after votes, never below the study's floor).
    sampling_weight = models.FloatField(default=1.0, editable=False)
    # A gold check (annotation/gold.py): the outcome is known, so it measures the annotator; its
    # votes never count in the results, and it is given to every annotator once (no K).
    gold = models.BooleanField(default=False)
    gold_expected = models.CharField(
        max_length=3, blank=True, choices=[("a", "a better"), ("tie", "tie"), ("b", "b better")]
    )
    # Routing: people's votes this comparison still needs, when not the study's K (0: the judge
    # settled it and it was not drawn for the audit). Blank: K.
    votes_wanted = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["study", "question", "run_a", "run_b"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gold=False, gold_expected="")
                | Q(gold=True, gold_expected__in=["a", "tie", "b"]),
                name="annotation_comparison_gold_expected",
            ),
            models.CheckConstraint(
                condition=Q(sampling_weight__gt=0), name="annotation_comparison_weight_positive"
            ),
            models.UniqueConstraint(
                fields=["study", "question", "run_a", "run_b"],
                name="annotation_comparison_one_per_pair_question",
            ),
            # One order only, so (a, b) and (b, a) can never both exist.
            models.CheckConstraint(
                condition=Q(run_a__lt=F("run_b")), name="annotation_comparison_canonical_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: {self.question} (run {self.run_a_id} v run {self.run_b_id})"


class Assignment(models.Model):
    """A comparison handed to one annotator, under a lease; the token is all they ever see."""

    class Status(models.TextChoices):
        LEASED = "leased"
        VOTED = "voted"
        # The lease ran out and the annotator was given something else; a late vote still counts
        # while the comparison is below K.
        EXPIRED = "expired"
        # The annotator passed it on (skip_reason says why); it goes to someone else.
        SKIPPED = "skipped"

    class SkipReason(models.TextChoices):
        CANNOT_JUDGE = "cannot_judge", "cannot judge"
        EXPERTISE = "expertise", "needs expertise"
        BROKEN = "broken", "offensive or broken content"

    class Side(models.TextChoices):
        A = "a"
        B = "b"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assignments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    token = models.CharField(max_length=64)
    left = models.CharField(
        max_length=1, choices=Side.choices, help_text="Which answer is shown on the left"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    first_delivered_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField()
    # The probability with which the claim picked this comparison, and among how many it
    # picked (null: a uniform pick); the fit weights the vote cast on it by 1 / (their product),
    # how much likelier a uniform pick would have made it (ranking.active).
    sampling_probability = models.FloatField(null=True, blank=True, editable=False)
    sampling_eligible = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # db_default: the loop inserts leases with SQL that names only the columns it sets.
    skip_reason = models.CharField(
        max_length=20, choices=SkipReason.choices, blank=True, default="", db_default=""
    )

    class Meta:
        ordering = ["-first_delivered_at"]
        indexes = [
            # Load of a comparison: its live leases (status = leased and lease_expires_at > now).
            models.Index(
                fields=["comparison", "status", "lease_expires_at"],
                name="annotation_assignment_load",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["token"], name="annotation_assignment_unique_token"),
            # Nobody judges the same pair twice.
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="annotation_assignment_one_per_annotator"
            ),
            # At most one pair in hand per annotator and study: a reload or a double request
            # gets that pair again instead of taking a second slot.
            models.UniqueConstraint(
                fields=["study", "annotator"],
                condition=Q(status="leased"),
                name="annotation_assignment_one_lease_per_study",
            ),
            models.CheckConstraint(
                condition=Q(left__in=["a", "b"]), name="annotation_assignment_left_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["leased", "voted", "expired", "skipped"]),
                name="annotation_assignment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    status="skipped", skip_reason__in=["cannot_judge", "expertise", "broken"]
                )
                | (~Q(status="skipped") & Q(skip_reason="")),
                name="annotation_assignment_skip_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(sampling_probability__isnull=True)
                | Q(sampling_probability__gt=0, sampling_probability__lte=1),
                name="annotation_assignment_probability_range",
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} of comparison {self.comparison_id} to {self.annotator}"


class Vote(models.Model):
    """One judgment. App votes belong to an assignment; imported votes only to a comparison; a
    judge run's verdicts (judging.Judgment.vote) to neither."""

    class Outcome(models.TextChoices):
        A = "a", "a better"
        TIE = "tie", "tie"
        B = "b", "b better"

    class Shown(models.TextChoices):
        LEFT = "left", "left better"
        TIE = "tie", "tie"
        RIGHT = "right", "right better"

    class Voter(models.TextChoices):
        # People: cast here, or imported human judgments. Judge: an LLM judge's verdict, never
        # counted against K (``Comparison.vote_count``) and never shown to an annotator.
        PEOPLE = "people", "people"
        JUDGE = "judge", "LLM judge"

    class TieKind(models.TextChoices):
        # FastChat's ``tie`` and ``tie (bothbad)``; blank on votes that are not ties.
        BOTH_GOOD = "bothgood", "both good"
        BOTH_BAD = "bothbad", "both bad"

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="votes")
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="votes"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="votes",
    )
    outcome = models.CharField(max_length=3, choices=Outcome.choices)
    tie_kind = models.CharField(max_length=8, choices=TieKind.choices, blank=True)
    # As the annotator saw it, so position bias can be measured; blank for imported votes.
    shown = models.CharField(max_length=5, choices=Shown.choices, blank=True)
    # Imported votes: which answer (a or b) the judge was shown first; blank when unknown. App
    # votes leave it blank (their assignment's ``left`` says it).
    first_shown = models.CharField(
        max_length=1, choices=Assignment.Side.choices, blank=True, editable=False
    )
    seconds = models.FloatField(
        null=True, blank=True, help_text="From the pair's first delivery to the vote (server)"
    )
    comment = models.TextField(blank=True)
    imported = models.BooleanField(default=False)
    voter = models.CharField(max_length=6, choices=Voter.choices, default=Voter.PEOPLE)
    judge = models.CharField(
        max_length=200, blank=True, help_text="Who judged an imported vote (FastChat `judge`)"
    )
    # On a multi-turn question: the vote judged the conversation up to this user turn only
    # (FastChat's MT-bench judgments give turn 1 and turn 2 apart). Blank: the whole
    # conversation, as every vote cast here; results read those unless asked for a turn.
    turn = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Judged the conversation up to this user turn only (blank: all of it)",
    )
    # Adaptive K (Study.Sampling.ADAPTIVE): the most people this vote's comparison could ask
    # (fixed at its first vote), the chance this vote was asked for, and the chance the next
    # one was, decided after it. Blank in other designs. The fit weights it 1 / (cap x asked).
    cap = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    asked = models.FloatField(null=True, blank=True, editable=False)
    next_asked = models.FloatField(null=True, blank=True, editable=False)
    # Staged design (Study.Sampling.STAGED): the stage the vote was asked in (1: the pilot)
    # and that stage's share of the human budget; ``cap`` holds the people its comparison asks
    # in the stage (slots) and ``asked`` the chance it was drawn. The fit weights it
    # share / (cap x asked). Blank in other designs.
    stage = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    share = models.FloatField(null=True, blank=True, editable=False)
    # An imported vote's content key (its file row, exchange.import_keys): a second import of
    # the same file finds its rows already here and adds nothing. Blank: cast in the app.
    import_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Import is idempotent: one vote per file row (content key) and comparison; read by
            # exchange.votes_import to skip rows a previous import brought in.
            models.UniqueConstraint(
                fields=["comparison", "import_key"],
                condition=~Q(import_key=""),
                name="annotation_vote_import_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(asked__isnull=True) | Q(asked__gt=0, asked__lte=1, cap__gte=1),
                name="annotation_vote_adaptive_asked_valid",
            ),
            models.CheckConstraint(
                condition=Q(turn__isnull=True) | Q(turn__gte=1),
                name="annotation_vote_turn_positive",
            ),
            # The rule the vote service relies on: a second vote on an assignment cannot exist.
            models.UniqueConstraint(
                fields=["assignment"], name="annotation_vote_one_per_assignment"
            ),
            models.CheckConstraint(
                condition=Q(imported=True)
                | Q(voter="judge")
                | (
                    Q(assignment__isnull=False, annotator__isnull=False, seconds__isnull=False)
                    & ~Q(shown="")
                ),
                name="annotation_vote_app_vote_has_assignment",
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=["a", "tie", "b"]), name="annotation_vote_outcome_valid"
            ),
            models.CheckConstraint(
                condition=Q(tie_kind="") | Q(outcome="tie", tie_kind__in=["bothgood", "bothbad"]),
                name="annotation_vote_tie_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(shown__in=["", "left", "tie", "right"]),
                name="annotation_vote_shown_valid",
            ),
            # A tie is a tie on both scales.
            models.CheckConstraint(
                condition=Q(shown="")
                | Q(outcome="tie", shown="tie")
                | (~Q(outcome="tie") & ~Q(shown="tie")),
                name="annotation_vote_tie_matches_shown",
            ),
            models.CheckConstraint(
                condition=Q(seconds__isnull=True) | Q(seconds__gte=0),
                name="annotation_vote_seconds_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(first_shown__in=["", "a", "b"]),
                name="annotation_vote_first_shown_valid",
            ),
            # A judge's verdict (imported, or from a judge run) belongs to no annotator.
            models.CheckConstraint(
                condition=Q(voter="people")
                | Q(voter="judge", annotator__isnull=True, assignment__isnull=True),
                name="annotation_vote_judge_has_no_annotator",
            ),
        ]

    def __str__(self) -> str:
        return f"vote {self.pk}: {self.outcome} on comparison {self.comparison_id}"


class StagePlan(CountedRun):
    """One stage of a staged study (Study.Sampling.STAGED), a run on the spine: planned once
    the stage before it is full, from the fit of everything so far (annotation/staging.py).
    Stage 1, the uniform pilot, is drawn when the study opens. ``done`` / ``total``: the
    comparisons drawn; ``votes`` the people's votes they ask for."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="stage_plans")
    stage = models.PositiveSmallIntegerField()
    share = models.FloatField()  # of the human budget
    budget = models.FloatField()  # people's votes expected (share x the study's budget)
    votes = models.PositiveIntegerField(default=0)  # slots drawn in all

    class Meta(CountedRun.Meta):
        constraints = [
            *CountedRun.Meta.constraints,
            # Planning is idempotent: one plan per stage, whoever asked for it.
            models.UniqueConstraint(fields=["study", "stage"], name="annotation_stageplan_once"),
            models.CheckConstraint(condition=Q(stage__gte=1), name="annotation_stageplan_stage"),
            models.CheckConstraint(
                condition=Q(share__gt=0, share__lte=1), name="annotation_stageplan_share"
            ),
        ]
        indexes = [Lease.stale_check_index("annotation_stageplan_hb")]

    def __str__(self) -> str:
        return f"{self.study}: stage {self.stage}"


class StageDraw(models.Model):
    """A comparison a stage drew: with this probability, asking ``slots`` more people."""

    plan = models.ForeignKey(StagePlan, on_delete=models.CASCADE, related_name="draws")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="+")
    slots = models.PositiveSmallIntegerField()
    probability = models.FloatField()

    class Meta:
        ordering = ["plan", "comparison"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "comparison"], name="annotation_stagedraw_once"
            ),
            models.CheckConstraint(
                condition=Q(slots__gte=1, probability__gt=0, probability__lte=1),
                name="annotation_stagedraw_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan}: comparison {self.comparison_id} x {self.slots}"


class IdentityFlag(models.Model):
    """A span of an answer that may give its model away, found when the study is opened.

    Masked from the start (annotators see ``[…]``): a leak cannot be taken back, a needless mask
    costs a few characters. Staff review the flags and may unmask one; who did it and when is
    kept, and reviewed flags survive a re-scan.
    """

    class Kind(models.TextChoices):
        NAME = "name", "model name or path"
        MAKER = "maker", "maker"
        WORD = "word", "identity word"
        SELF_INTRO = "self_intro", "self-introduction (私は…です)"
        DEVELOPED_BY = "developed_by", "developed by … (…によって開発された)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="identity_flags")
    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    text = models.CharField(max_length=500)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    masked = models.BooleanField(default=True, help_text="Show “[…]” to annotators instead")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "answer", "start"]
        constraints = [
            # Re-scanning a study keeps admins' mask decisions: spans are matched by position.
            models.UniqueConstraint(
                fields=["study", "answer", "start", "end"],
                name="annotation_identityflag_unique_span",
            ),
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="annotation_identityflag_span_nonempty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.text}"


class AnnotatorProgress(models.Model):
    """An annotator's progress in a study, kept rather than counted on every request
    (loop/progress.py): ``done`` their votes; ``closed`` the open comparisons they can no
    longer be given (voted, skipped, or their lease ran out). What is left for them is the
    study's ``open_pairs`` - ``closed`` (then their quota). Valid while ``basis`` equals the
    study's ``progress_basis``; otherwise the next reader counts it again."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    done = models.PositiveIntegerField(default=0)
    closed = models.IntegerField(default=0)
    basis = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The row every vote, skip and expiry of the annotator in the study updates.
            models.UniqueConstraint(
                fields=["study", "annotator"], name="annotation_progress_one_per_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator} in {self.study}: {self.done} done"


class AnnotatorExclusion(models.Model):
    """An annotator whose votes in a study are left out of its results (deleting the row puts
    them back: nothing else changes)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="exclusions")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    excluded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "annotator"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "annotator"], name="annotation_exclusion_one_per_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator} left out of {self.study}"
