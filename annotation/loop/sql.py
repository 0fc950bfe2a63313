"""The loop's shared SQL: table names, who may annotate, live leases, and
stored rows made into model instances by Django."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.models import Model

from generation.models import Answer, Question

from ..models import AnnotatorProgress, Assignment, Comparison, IdentityFlag, Study, Vote

ANNOTATORS_GROUP = "annotators"
M = TypeVar("M", bound=Model)

SQL_NAMES = {
    "study": Study._meta.db_table,
    "comparison": Comparison._meta.db_table,
    "assignment": Assignment._meta.db_table,
    "vote": Vote._meta.db_table,
    "question": Question._meta.db_table,
    "answer": Answer._meta.db_table,
    "flag": IdentityFlag._meta.db_table,
    "progress": AnnotatorProgress._meta.db_table,
    "members": User.groups.through._meta.db_table,
    "groups": Group._meta.db_table,
    "pool_users": Study.pool_users.through._meta.db_table,
    "pool_groups": Study.pool_groups.through._meta.db_table,
    "left": connection.ops.quote_name("left"),
}


# Values that never change, written into the statements rather than bound: a prepared
# statement's generic plan knows nothing of a bound value, so ``status = %(leased)s`` could not
# use the indexes whose predicate is ``status = 'leased'`` (the one lease per study), and a
# lookup of the lease an annotator holds became a scan of their assignments.
CONSTANTS = {
    "leased": Assignment.Status.LEASED.value,
    "voted": Assignment.Status.VOTED.value,
    "expired": Assignment.Status.EXPIRED.value,
    "skipped": Assignment.Status.SKIPPED.value,
    "open": Study.Status.OPEN.value,
    "a": Assignment.Side.A.value,
    "b": Assignment.Side.B.value,
    "group": ANNOTATORS_GROUP,
}
_LITERALS = {f"%({name})s": f"'{value}'" for name, value in CONSTANTS.items()}
_LITERALS |= {"%(true)s": "TRUE", "%(false)s": "FALSE"}


def sql(text: str, **parts: str) -> str:
    """SQL with the table names (and ``parts``) filled in, and the ``CONSTANTS`` (and true,
    false) written in; other values stay %(name)s parameters."""
    text = text.format(**SQL_NAMES, **parts)
    for placeholder, literal in _LITERALS.items():
        text = text.replace(placeholder, literal)
    return text


# Who may annotate: staff, members of the annotators group, and anyone in a study's pool (its
# users, or members of its groups). The annotator API asks it within the loop's first statement
# (see apis.MayAnnotate); the pages ask it alone. Which studies they see is IN_POOL's answer.
MAY_ANNOTATE = sql(
    """(%(staff)s OR EXISTS (
    SELECT 1 FROM {members} m JOIN {groups} g ON g.id = m.group_id
    WHERE m.user_id = %(annotator)s AND g.name = %(group)s)
    OR EXISTS (SELECT 1 FROM {pool_users} pu WHERE pu.user_id = %(annotator)s)
    OR EXISTS (SELECT 1 FROM {pool_groups} pg JOIN {members} pm ON pm.group_id = pg.group_id
               WHERE pm.user_id = %(annotator)s))"""
)


def in_pool(study: str) -> str:
    """Whether the annotator may judge ``study`` (an id expression): staff always; else its
    chosen users and groups, or, when it has none, the annotators group."""
    return sql(
        """(%(staff)s
    OR EXISTS (SELECT 1 FROM {pool_users} pu WHERE pu.study_id = {s}
               AND pu.user_id = %(annotator)s)
    OR EXISTS (SELECT 1 FROM {pool_groups} pg JOIN {members} pm ON pm.group_id = pg.group_id
               WHERE pg.study_id = {s} AND pm.user_id = %(annotator)s)
    OR (NOT EXISTS (SELECT 1 FROM {pool_users} pu WHERE pu.study_id = {s})
        AND NOT EXISTS (SELECT 1 FROM {pool_groups} pg WHERE pg.study_id = {s})
        AND EXISTS (SELECT 1 FROM {members} m JOIN {groups} g ON g.id = m.group_id
                    WHERE m.user_id = %(annotator)s AND g.name = %(group)s)))""",
        s=study,
    )


# An assignment row whose lease is live.
LIVE_LEASE = "status = %(leased)s AND lease_expires_at > %(now)s"
NOBODY = 0  # as ``excluded``: user ids start at 1, so no lease is left out


def live_leases(study: str) -> str:
    """Live leases per comparison of a study, leaving out the ``excluded`` annotator's."""
    return sql(
        """SELECT comparison_id, COUNT(*) AS n FROM {assignment}
           WHERE study_id = {study_id} AND {live} AND annotator_id <> %(excluded)s
           GROUP BY comparison_id""",
        study_id=study,
        live=LIVE_LEASE,
    )


def target(comparison: str, k: str) -> str:
    """People's votes a comparison wants: its own target when routing set one (0: the judge
    settled it), else the study's K. A column of the row already read, so no scan is added."""
    return f"COALESCE({comparison}.votes_wanted, {k})"


def cursor():
    """A cursor for the loop's statements. On PostgreSQL with DB_PREPARED_STATEMENTS on (off by
    default: see settings.py) it binds parameters on the server, so psycopg prepares each
    statement once per connection (from its ``prepare_threshold``-th run) and the server plans
    it once (``plan_cache_mode``, ``force_generic_plan`` by default): planning was about a
    third of the server's CPU per vote (EXPLAIN: 0.5-0.6 ms each for the vote target, the vote
    and the claim).
    Django's cursor wrapper is kept, so errors, execute wrappers and query capture are as for
    any cursor. Elsewhere: Django's own cursor."""
    if connection.vendor != "postgresql" or not settings.DB_PREPARED_STATEMENTS:
        return connection.cursor()
    from django.db.backends.postgresql.base import (
        TIMESTAMPTZ_OID,
        Format,
        ServerBindingCursor,
        register_tzloader,
    )

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = ServerBindingCursor(connection.connection)
        # As Django's create_cursor: timestamps in the connection's time zone.
        loader = connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        if connection.timezone != loader.timezone:
            register_tzloader(connection.timezone, raw)
        return connection._prepare_cursor(raw)


def fetchone(statement: str, params: dict) -> tuple | None:
    with cursor() as found:
        found.execute(statement, params)
        return found.fetchone()


def params(*, study_id: int, annotator, now: datetime, **extra) -> dict:
    return {
        "study": study_id,
        "annotator": annotator.pk,
        "staff": annotator.is_staff,
        "now": connection.ops.adapt_datetimefield_value(now),
        "leased": Assignment.Status.LEASED.value,
        "voted": Assignment.Status.VOTED.value,
        "excluded": annotator.pk,
        "group": ANNOTATORS_GROUP,
        "open": Study.Status.OPEN.value,
        "true": True,
        **extra,
    }


def read_datetime(value):
    """A datetime as a raw cursor returned it: PostgreSQL's already is one, SQLite's is text."""
    if value is None or connection.vendor != "sqlite":
        return value
    return connection.ops.convert_datetimefield_value(value, None, connection)


def stored(model: type[M], values: dict) -> M:
    """The instance of a row this loop has just read or written, made by Django (``from_db``)
    from Python values; fields not in ``values`` are deferred, as with ``only()``."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])
