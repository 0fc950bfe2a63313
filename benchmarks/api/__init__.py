"""Staff-only REST API for benchmark runs and the tasks they may name (routes:
benchmarks/api_urls.py). Model names and outputs are staff matters: nothing here is open to
annotators."""

from .runs import BenchmarkRunViewSet, BenchmarkTaskList

__all__ = ["BenchmarkRunViewSet", "BenchmarkTaskList"]
