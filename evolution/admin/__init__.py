"""Staff admin for Evol-Instruct: rewrite prompts (a version a run used is kept; saving a changed
template makes the next version), runs with their per-operation report (read-only; cancel and
retry; "Train an evolver"), every item (filter by run, kept, rule, operation), and the
"Evolve…" action on instruction data sets (datasets.py extends generation's admin for them).
"""

from . import datasets, items, prompts, runs  # noqa: F401 - each registers its admin
