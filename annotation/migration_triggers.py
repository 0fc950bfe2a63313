"""SQLite rebuilds a table to alter it (new table, copy, drop, rename): a trigger on another
table that names the rebuilt one then fails ("no such table"), and the rebuilt table's own
triggers are dropped with it. Migrations after 0012 that alter annotation tables drop the
progress triggers first and create them again last (PostgreSQL alters in place: untouched)."""

import importlib

from django.db import migrations

_PROGRESS = importlib.import_module("annotation.migrations.0012_annotator_progress")
_TARGET = "annotation_progress_comparison_target"


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            for statement in statements:
                schema_editor.execute(statement, params=None)

    return run


def created(target: str) -> list[str]:
    """0012's triggers, with ``target`` as the comparison-target trigger."""
    return [s for s in _PROGRESS._SQLITE if _TARGET not in s] + [target]


def around(operations: list, *, before: str, after: str) -> list:
    """``operations`` with the SQLite progress triggers dropped before and created after
    (``after``: the target trigger they end with; ``before``: the one to restore on reversal)."""
    return [
        migrations.RunPython(_run(_PROGRESS._SQLITE_DROP), _run(created(before))),
        *operations,
        migrations.RunPython(_run(created(after)), _run(_PROGRESS._SQLITE_DROP)),
    ]
