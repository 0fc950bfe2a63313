"""What a judge run came to, in counts: for its admin row, the results page and the command.

Pairwise counts are of comparisons (each judged in two orders): ``judged`` has both orders
stored; of those, ``consistent`` read the same in both, ``inconsistent`` parsed both ways but
disagree, ``unparsable`` has at least one order the judge never answered readably. ``votes`` is
the judge votes the run made (two per consistent comparison; two per inconsistent one too unless
the run leaves those out).
"""

from __future__ import annotations

from collections import defaultdict

from annotation.models import Study

from .models import JudgePrompt, JudgeRun, Judgment

UNPARSABLE = Judgment.Verdict.UNPARSABLE


def judge_run_summary(run: JudgeRun) -> dict:
    """Counts of one run's verdicts. Pairwise: ``judged``, ``expected``, ``consistent``,
    ``inconsistent``, ``unparsable``, ``votes``; grading: ``graded``, ``unparsable``,
    ``expected``."""
    rows = Judgment.objects.filter(run=run)
    if run.prompt.kind == JudgePrompt.Kind.GRADING:
        verdicts = list(rows.values_list("verdict", flat=True))
        return {
            "graded": sum(v == Judgment.Verdict.SCORED for v in verdicts),
            "unparsable": sum(v == UNPARSABLE for v in verdicts),
            "expected": run.total,
        }
    orders: dict[int, dict[str, str]] = defaultdict(dict)
    votes = 0
    for comparison_id, first, verdict, vote_id in rows.values_list(
        "comparison_id", "first", "verdict", "vote_id"
    ):
        orders[comparison_id][first] = verdict
        votes += vote_id is not None
    judged = [seen for seen in orders.values() if len(seen) == 2]
    unparsable = [seen for seen in judged if UNPARSABLE in seen.values()]
    consistent = [
        seen for seen in judged if UNPARSABLE not in seen.values() and len(set(seen.values())) == 1
    ]
    return {
        "judged": len(judged),
        "expected": run.total // 2,
        "consistent": len(consistent),
        "inconsistent": len(judged) - len(consistent) - len(unparsable),
        "unparsable": len(unparsable),
        "votes": votes,
    }


def study_judge_summaries(study: Study) -> list[dict]:
    """One dict per judge run of the study, oldest first: which judge and prompt, whether it
    judged the last turn only, its grading scale, the file its verdicts were imported from
    (blank when the app asked the judge), its state and its counts (staff only: it names the
    judge)."""
    runs = JudgeRun.objects.filter(study=study).select_related("judge", "prompt").order_by("pk")
    return [
        {
            "id": run.pk,
            "judge": run.judge.name,
            "prompt": str(run.prompt),
            "mode": run.prompt.kind,
            # Named on the results page: the judge saw the last turn of each conversation only.
            "last_turn_only": run.last_turn_only,
            "scale": (
                f"{run.prompt.score_min}-{run.prompt.score_max}"
                if run.prompt.kind == JudgePrompt.Kind.GRADING
                else ""
            ),
            "imported_from": run.source,
            "status": run.status,
            "done": run.done,
            "total": run.total,
            **judge_run_summary(run),
        }
        for run in runs
    ]
