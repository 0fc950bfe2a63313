"""Admin: API tokens (made here for the signed-in user, shown once; revoked by an action) and
the audit log, read-only."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from .models import ApiToken, AuditEntry
from .services import EXPIRY_IN_PAST, TokenError, api_token_create, api_token_revoke


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["name", "expires_at"]

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(EXPIRY_IN_PAST)
        return expires_at


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "state"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    actions = ["revoke_tokens"]
    add_fields = ["name", "expires_at"]
    shown_fields = [
        "name",
        "user",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "state",
    ]

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.shown_fields

    def get_readonly_fields(self, request, obj=None):
        # A token is never edited: its owner, expiry and secret stay as made; revoke it instead.
        return [] if obj is None else self.shown_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoked rows stay: the audit log points at them

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return token.state

    def save_model(self, request, obj, form, change):
        if change:
            return
        # Always the signed-in user's own token: a token made for someone else would let its
        # maker act as them.
        token, secret = api_token_create(
            user=request.user, name=obj.name, expires_at=obj.expires_at
        )
        obj.pk = token.pk
        obj.refresh_from_db()
        obj.secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        # The one page that shows the token; it is not kept for a later page.
        context = {
            **self.admin_site.each_context(request),
            "title": "API token created",
            "opts": self.model._meta,
            "token": obj,
            "secret": obj.secret,
        }
        response = TemplateResponse(request, "admin/accounts/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        for token in queryset:
            try:
                api_token_revoke(token=token, user=request.user)
            except TokenError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"Revoked {token}.", messages.SUCCESS)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Evidence: nobody adds, edits or deletes an entry here, superusers included."""

    list_display = ["created_at", "actor", "via_token", "action", "content_type", "object_repr"]
    list_filter = ["action", "content_type"]
    search_fields = ["actor", "object_repr", "object_id"]
    list_select_related = ["token", "content_type"]
    date_hierarchy = "created_at"
    fields = [
        "created_at",
        "actor",
        "user",
        "token",
        "action",
        "content_type",
        "object_id",
        "object_repr",
        "details_json",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="token")
    def via_token(self, entry: AuditEntry) -> str:
        return f"{entry.token.prefix}…" if entry.token_id else ""

    @admin.display(description="details")
    def details_json(self, entry: AuditEntry):
        return format_html("<pre>{}</pre>", json.dumps(entry.details, ensure_ascii=False, indent=2))
