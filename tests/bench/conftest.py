# Benchmarks are scripts (python tests/bench/bench_*.py), never collected as tests.
collect_ignore_glob = ["bench_*.py"]
