from django.db import migrations

ANNOTATORS_GROUP = "annotators"  # annotation.selectors.ANNOTATORS_GROUP at the time of writing


def create_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name=ANNOTATORS_GROUP)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    # Reversing leaves the group: it may have members by then.
    operations = [migrations.RunPython(create_group, migrations.RunPython.noop)]
