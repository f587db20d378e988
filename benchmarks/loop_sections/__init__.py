"""The sections of benchmarks/loop_bench.py, one module each (the script is their command line)."""
