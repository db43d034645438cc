"""The benchmark's scenarios, one module each; every one exposes `run(bench, master_or_masters, ...)`.

The order they run in, and on which masters, is benchmarks/run.py's; what they share is benchmarks/harness.py.
"""
