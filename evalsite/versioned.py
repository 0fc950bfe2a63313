"""The rules every versioned row follows: prompt templates, judge prompts, rewrite prompts.

Rows share a key (a template's or judge prompt's name, a rewrite prompt's operation) and are
numbered 1, 2, ... within it. A version some run used is never changed in place: saving changes
to what it renders (or how its output is read) creates the next version of the key instead, so
every run keeps exactly what it was made with. Each model's service module keeps its own checks
and messages and asks ``Versions`` for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from django.db.models import Max

from evalsite.errors import ServiceError


def _user(user):
    return user if getattr(user, "is_authenticated", False) else None


class Versions:
    """``model``'s versions keyed by ``key``. ``fields``: what staff may set; ``rendered``:
    the fields whose change, on a version in use, makes a new version; ``in_use(row)``: whether
    a run recorded the version."""

    def __init__(
        self,
        model,
        *,
        key: str,
        fields: Sequence[str],
        rendered: Sequence[str],
        in_use: Callable[[object], bool],
        unknown: str,
        gone: str,
    ):
        self.model, self.key, self.in_use = model, key, in_use
        self.fields, self.rendered = list(fields), list(rendered)
        self.unknown_message, self.gone_message = unknown, gone

    def latest(self, key_value: str, **filters):
        """The highest version of ``key_value`` (among rows matching ``filters``), or None."""
        rows = self.model.objects.filter(**{self.key: key_value}, **filters)
        return rows.order_by("-version").first()

    def keys(self) -> list[str]:
        return sorted(set(self.model.objects.values_list(self.key, flat=True)))

    def defaults(self) -> dict:
        return {f: self.model._meta.get_field(f).get_default() for f in self.fields}

    def check_known(self, fields: Iterable[str], also: Iterable[str] = ()) -> None:
        """ServiceError naming fields staff may not set."""
        unknown = sorted(set(fields) - set(self.fields) - set(also))
        if unknown:
            raise ServiceError(self.unknown_message.format(fields=", ".join(unknown)))

    def lock(self, row):
        """Lock every version of ``row``'s key (a second edit of a used version waits for the
        first, then numbers after it) and return ``row`` as stored; call inside a transaction."""
        key_value = getattr(row, self.key)
        locked = list(self.model.objects.select_for_update().filter(**{self.key: key_value}))
        found = next((r for r in locked if r.pk == row.pk), None)
        if found is None:
            raise ServiceError(self.gone_message.format(row=row))
        return found

    def next_version(self, key_value: str) -> int:
        """One above the highest version of ``key_value`` (1 for a new key); call with the
        key's rows locked."""
        rows = self.model.objects.filter(**{self.key: key_value})
        return (rows.aggregate(top=Max("version"))["top"] or 0) + 1

    def create(self, values: dict, *, user=None, version: int | None = None):
        """A new row of ``values`` numbered ``version`` (None: the next of its key)."""
        key_value = values[self.key]
        number = version if version is not None else self.next_version(key_value)
        return self.model.objects.create(**values, version=number, created_by=_user(user))

    def apply(self, row, values: dict, *, user=None) -> tuple[object, list[str]]:
        """Store ``values`` (every field, checked) for ``row`` (locked): the row holding them and
        the fields that changed. A version in use whose rendered fields change is kept and the
        values saved as the key's next version; otherwise ``row`` itself changes."""
        changed = [f for f in self.fields if f in values and values[f] != getattr(row, f)]
        if not changed:
            return row, []
        if self.in_use(row) and any(f in self.rendered for f in changed):
            copy = {f: values.get(f, getattr(row, f)) for f in self.fields}
            copy[self.key] = getattr(row, self.key)
            created = self.model.objects.create(
                **copy,
                version=self.next_version(copy[self.key]),
                created_by=_user(user) or row.created_by,
            )
            return created, changed
        for field in changed:
            setattr(row, field, values[field])
        row.save(update_fields=changed)
        return row, changed

    def presets_install(self, presets: dict[str, dict]) -> list[str]:
        """Version 1 of every preset (key -> field values) whose key has no row yet; returns the
        keys created. Migrations ship them; this restores them after a database was emptied
        (``flush``, a transactional test). Idempotent."""
        present = set(
            self.model.objects.filter(**{f"{self.key}__in": list(presets)}).values_list(
                self.key, flat=True
            )
        )
        missing = [key for key in presets if key not in present]
        self.model.objects.bulk_create(
            [self.model(**{self.key: key}, version=1, **presets[key]) for key in missing],
            ignore_conflicts=True,
        )
        return missing
