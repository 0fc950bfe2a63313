"""Version 1 of each operation's rewrite prompt (evolution/engine/operations.PRESETS)."""

from django.db import migrations


def install(apps, schema_editor):
    from evolution.engine.operations import DESCRIPTIONS, OPERATIONS, PRESETS

    EvolutionPrompt = apps.get_model("evolution", "EvolutionPrompt")
    present = set(EvolutionPrompt.objects.values_list("operation", flat=True))
    EvolutionPrompt.objects.bulk_create(
        EvolutionPrompt(
            operation=op,
            version=1,
            template=PRESETS[op],
            description="shipped: " + DESCRIPTIONS[op],
            active=True,
        )
        for op in OPERATIONS
        if op not in present
    )


class Migration(migrations.Migration):
    dependencies = [("evolution", "0001_initial")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
