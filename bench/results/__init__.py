"""The latest benchmark results, `latest.json`, written by `python -m bench.run`.

The package installs this folder as `llm_bench_results`, so that the performance
appendix can read the file with `importlib.resources` without a checkout."""
