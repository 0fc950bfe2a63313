"""The spine every background run rides on (docs/architecture.md).

``models.Run`` is the abstract run (status, lease, tries, timings); ``kinds`` is the registry of
run kinds (model, label, work, queue); ``lifecycle`` claims, heartbeats, cancels, retries and
requeues runs of any kind; ``shards`` splits a run into ranges of its items that several workers
execute at once; ``tasks`` holds the one Celery task that executes any kind; ``workers``
tells who consumes which queue; ``admin``, ``api`` and ``commands`` are the bases every run kind's
admin, API view and management command build on.
"""
