from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Personal API tokens and the audit log of staff actions (its own label: ``accounts``)."""

    name = "evalsite.accounts"
    label = "accounts"
    verbose_name = "Accounts and audit"
    default_auto_field = "django.db.models.BigAutoField"
