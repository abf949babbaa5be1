"""The reporting half of the suite: everything that reads stored pytest-benchmark results and prints or draws them.

The measuring half (``mnistbench`` beside this package) writes the results; nothing here trains or times.
"""
