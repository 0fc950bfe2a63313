"""Reading a benchmark run's results: rows for the API and a text table for the command."""

from __future__ import annotations

from .models import BenchmarkResult, BenchmarkRun

COLUMNS = ("task", "metric", "value", "stderr", "n", "shots", "scoring", "prompt")


def result_rows(run: BenchmarkRun) -> list[dict]:
    return [
        {
            "task": r.task,
            "metric": r.metric,
            "value": r.value,
            "stderr": r.stderr,
            "n": r.n,
            "num_fewshot": r.num_fewshot,
            "scoring": r.scoring,
            "prompt_format": r.prompt_format,
            "harness_version": r.harness_version,
        }
        for r in BenchmarkResult.objects.filter(run=run).order_by("task", "metric")
    ]


def results_table(run: BenchmarkRun) -> str:
    """The run's results as an aligned text table, in the run's task order."""
    order = {task: i for i, task in enumerate(run.tasks)}
    rows = sorted(result_rows(run), key=lambda r: (order.get(r["task"], 1e9), r["metric"]))
    cells = [
        (
            r["task"],
            r["metric"],
            f"{r['value']:.4f}",
            "-" if r["stderr"] is None else f"{r['stderr']:.4f}",
            str(r["n"]),
            str(r["num_fewshot"]),
            r["scoring"],
            r["prompt_format"],
        )
        for r in rows
    ]
    out = [text_table(COLUMNS, cells)]
    version = rows[0]["harness_version"] if rows else ""
    if version:
        out.append(f"({version})")
    return "\n".join(out)


def text_table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> str:
    """Aligned columns for a terminal: the header, a rule, one line per row."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(out)


CATALOGUE_COLUMNS = ("task", "kind", "output_type", "source", "path")


def catalogue_table(rows: list[dict]) -> str:
    """The catalogue (``catalog.task_rows``) for ``benchmark --list``: tasks and groups, then
    each file left out with its error."""
    cells = [
        (
            r["name"],
            r["kind"],
            f"{len(r['members'])} tasks" if r["kind"] == "group" else r["output_type"],
            r["source"],
            r["path"],
        )
        for r in rows
        if not r["error"]
    ]
    out = [text_table(CATALOGUE_COLUMNS, cells)]
    broken = [r for r in rows if r["error"]]
    if broken:
        out.append(f"\n{len(broken)} task file(s) left out (they cannot be read):")
        out += [f"  {r['path']}: {r['error']}" for r in broken]
    return "\n".join(out)
