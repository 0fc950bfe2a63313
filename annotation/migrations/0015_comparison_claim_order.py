"""The claim's index (annotation/loop/assign.py, ``_PROBE_SQL``): a study's comparisons by gold,
vote count and a fixed pseudo-random order (Knuth's multiplicative hash of the id), so that a
claim reads the first few comparisons after a random point among those with the fewest votes
instead of sorting all of them on every claim.

Raw SQL: an expression index the models do not declare (its expression is the claim's own). It
adds an index and rebuilds no table, so the SQLite progress triggers need no drop and re-create
(annotation/migration_triggers.py); on SQLite a later rebuild of the comparison table would drop
it, which costs the demo only speed."""

from django.db import migrations

INDEX = "annotation_comparison_claim_order"
ORDER = "((id * 2654435761) % 4294967296)"


class Migration(migrations.Migration):
    dependencies = [("annotation", "0014_vote_import_key")]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX {INDEX} ON annotation_comparison (study_id, gold, vote_count, {ORDER})",
            f"DROP INDEX {INDEX}",
        )
    ]
