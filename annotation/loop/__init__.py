"""The annotator loop: who may annotate, where an annotator stands, the next pair, the vote.

It owns its SQL end to end. These statements run on every next-pair and vote request, so each
is one hand-written SQL statement, portable between PostgreSQL and SQLite. Through the ORM, with
loads counted in Python, next-pair took 19 statements and about 22 ms in process and a vote 14
statements and about 18 ms; now they take 4 and 3 statements (1 of them the user; the session
comes from Redis where there is one) and about 7.5 and 6 ms, against 2.3 ms for the trivial view
(bench/annotate_load.py measures the throughput; tests/annotation/test_vote_api.py counts the
statements). Load = votes (the kept Comparison.vote_count) + live leases; live leases are few
(an annotator holds at most one per study), so they are grouped once in a derived table.
Prepared statements (``sql.cursor()``, settings ``DB_PREPARED_STATEMENTS``, off by default):
an earlier try prepared nothing (Django turns psycopg's preparing off); done properly they saved
a third of the server's CPU per vote on fresh tables and lost it, and more, as votes accumulated
(settings.py has the figures), so they stay an option.

Progress is kept, not counted (progress.py): counted, it scanned the study's comparisons twice
per next pair and once per vote. A vote asked with ?next=1 claims the next pair in its own
transaction (``votes.vote_cast(then=...)`` calling ``assign.next_pair_here``), so the voting
page's loop is one request per vote: the vote's target read, the vote (one statement, a second
when it fills the comparison), the claim and the lease.

sql: table names, shared fragments, rows to models; state: permission, loop state; progress: the
kept counts; assign: claim, lease, next pair, what is shown; votes: vote target and vote write;
skips: skips.
"""
