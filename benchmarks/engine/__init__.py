"""Benchmark runs through lm-evaluation-harness: plain data in, plain data out, no Django.

``catalogue`` reads task YAML without lm-eval (the web process may not have it); ``harness``
imports lm-eval lazily and runs one task at a time; ``reading`` turns lm-eval's results and
logged samples into plain rows.
"""
