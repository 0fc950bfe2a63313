"""The annotator loop: who may annotate, where an annotator stands, the next pair, the vote.

It owns its SQL end to end. These statements run on every next-pair and vote request, so each
is one hand-written SQL statement, portable between PostgreSQL and SQLite. Through the ORM, with
loads counted in Python, next-pair took 19 statements and about 22 ms in process and a vote 14
statements and about 18 ms; now they take 5 and 4 statements (2 of them the session and the user)
and about 7.5 and 6 ms, against 2.3 ms for the trivial view (bench/annotate_load.py measures the
throughput; tests/annotation/test_vote_api.py counts the statements). Load = votes (the kept
Comparison.vote_count) + live leases; live leases are few (an annotator holds at most one per
study), so they are grouped once in a derived table.

sql: table names, shared fragments, rows to models; state: permission, progress, loop state;
assign: claim, lease, next pair, what is shown; votes: vote target and vote write.
"""
