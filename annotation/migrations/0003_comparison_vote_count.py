from django.db import migrations, models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce


def count_existing_votes(apps, schema_editor):
    Comparison = apps.get_model("annotation", "Comparison")
    Vote = apps.get_model("annotation", "Vote")
    votes = (
        Vote.objects.filter(comparison=OuterRef("pk"))
        .order_by()
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n")
    )
    Comparison.objects.update(vote_count=Coalesce(Subquery(votes), 0))


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0002_annotators_group"),
    ]

    operations = [
        migrations.AddField(
            model_name="comparison",
            name="vote_count",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(count_existing_votes, migrations.RunPython.noop),
    ]
