# The staged prediction-powered design, live (annotation/staging.py): the study's human
# budget, the "staged" sampling, each vote's stage and share, and the stage plans (runs on the
# spine) with the comparisons each drew. Altered tables go through migration_triggers.around,
# as 0013 and 0014 do (the comparison-target trigger stays 0013's).

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from annotation.migration_triggers import around

_TARGET_NOW = importlib.import_module("annotation.migrations.0013_adaptive_k")._SQLITE_TARGET


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0014_vote_import_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = around(
        [
            migrations.AddField(
                model_name="study",
                name="human_budget",
                field=models.PositiveIntegerField(
                    blank=True,
                    help_text="Staged design: people's votes in all (blank: K x comparisons); "
                    "set before opening",
                    null=True,
                ),
            ),
            migrations.AlterField(
                model_name="study",
                name="sampling",
                field=models.CharField(
                    choices=[
                        ("uniform", "Uniform"),
                        ("active", "Active"),
                        ("adaptive", "Adaptive"),
                        ("staged", "Staged"),
                    ],
                    default="uniform",
                    help_text="Active: after one vote each, prefer comparisons whose pair is "
                    "least settled. Adaptive K: one person at a time; a comparison stops once "
                    "its votes agree with the judge, and close pairs get more than K people, "
                    "clear ones fewer. Staged: needs the judge's verdicts on every comparison; "
                    "people's votes (the human budget) in a uniform pilot, then stages planned "
                    "on the fit so far",
                    max_length=10,
                ),
            ),
            migrations.RemoveConstraint(
                model_name="study",
                name="annotation_study_sampling_valid",
            ),
            migrations.AddConstraint(
                model_name="study",
                constraint=models.CheckConstraint(
                    condition=models.Q(
                        ("sampling__in", ["uniform", "active", "adaptive", "staged"])
                    ),
                    name="annotation_study_sampling_valid",
                ),
            ),
            migrations.AddConstraint(
                model_name="study",
                constraint=models.CheckConstraint(
                    condition=models.Q(
                        ("human_budget__isnull", True),
                        ("human_budget__gte", 1),
                        _connector="OR",
                    ),
                    name="annotation_study_human_budget_positive",
                ),
            ),
            migrations.AddField(
                model_name="vote",
                name="stage",
                field=models.PositiveSmallIntegerField(blank=True, editable=False, null=True),
            ),
            migrations.AddField(
                model_name="vote",
                name="share",
                field=models.FloatField(blank=True, editable=False, null=True),
            ),
            migrations.CreateModel(
                name="StagePlan",
                fields=[
                    (
                        "id",
                        models.BigAutoField(
                            auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                        ),
                    ),
                    (
                        "status",
                        models.CharField(
                            choices=[
                                ("queued", "Queued"),
                                ("running", "Running"),
                                ("succeeded", "Succeeded"),
                                ("failed", "Failed"),
                                ("cancelled", "Cancelled"),
                            ],
                            default="queued",
                            max_length=20,
                        ),
                    ),
                    ("error", models.TextField(blank=True)),
                    ("worker", models.CharField(blank=True, max_length=200)),
                    ("attempts", models.PositiveIntegerField(default=0)),
                    ("created_at", models.DateTimeField(auto_now_add=True)),
                    ("started_at", models.DateTimeField(blank=True, null=True)),
                    ("finished_at", models.DateTimeField(blank=True, null=True)),
                    ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                    ("done", models.PositiveIntegerField(default=0)),
                    ("total", models.PositiveIntegerField(default=0)),
                    ("stage", models.PositiveSmallIntegerField()),
                    ("share", models.FloatField()),
                    ("budget", models.FloatField()),
                    ("votes", models.PositiveIntegerField(default=0)),
                    (
                        "created_by",
                        models.ForeignKey(
                            blank=True,
                            null=True,
                            on_delete=django.db.models.deletion.SET_NULL,
                            to=settings.AUTH_USER_MODEL,
                        ),
                    ),
                    (
                        "study",
                        models.ForeignKey(
                            on_delete=django.db.models.deletion.CASCADE,
                            related_name="stage_plans",
                            to="annotation.study",
                        ),
                    ),
                ],
                options={
                    "ordering": ["-created_at"],
                    "abstract": False,
                    "indexes": [
                        models.Index(
                            fields=["status", "heartbeat_at"], name="annotation_stageplan_hb"
                        )
                    ],
                    "constraints": [
                        models.CheckConstraint(
                            condition=models.Q(
                                ("done__lte", models.F("total")), ("total", 0), _connector="OR"
                            ),
                            name="annotation_stageplan_done_le_total",
                        ),
                        models.UniqueConstraint(
                            fields=("study", "stage"), name="annotation_stageplan_once"
                        ),
                        models.CheckConstraint(
                            condition=models.Q(("stage__gte", 1)),
                            name="annotation_stageplan_stage",
                        ),
                        models.CheckConstraint(
                            condition=models.Q(("share__gt", 0), ("share__lte", 1)),
                            name="annotation_stageplan_share",
                        ),
                    ],
                },
            ),
            migrations.CreateModel(
                name="StageDraw",
                fields=[
                    (
                        "id",
                        models.BigAutoField(
                            auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                        ),
                    ),
                    ("slots", models.PositiveSmallIntegerField()),
                    ("probability", models.FloatField()),
                    (
                        "comparison",
                        models.ForeignKey(
                            on_delete=django.db.models.deletion.CASCADE,
                            related_name="+",
                            to="annotation.comparison",
                        ),
                    ),
                    (
                        "plan",
                        models.ForeignKey(
                            on_delete=django.db.models.deletion.CASCADE,
                            related_name="draws",
                            to="annotation.stageplan",
                        ),
                    ),
                ],
                options={
                    "ordering": ["plan", "comparison"],
                    "constraints": [
                        models.UniqueConstraint(
                            fields=("plan", "comparison"), name="annotation_stagedraw_once"
                        ),
                        models.CheckConstraint(
                            condition=models.Q(
                                ("probability__gt", 0), ("probability__lte", 1), ("slots__gte", 1)
                            ),
                            name="annotation_stagedraw_valid",
                        ),
                    ],
                },
            ),
        ],
        before=_TARGET_NOW,
        after=_TARGET_NOW,
    )
