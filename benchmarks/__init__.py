"""Benchmarks: each module has ``main(argv)`` returning its measured ratio or values and prints its ratio last;
``python -m benchmarks`` (``make bench``) runs them all and writes ``benchmarks/results.md``."""
