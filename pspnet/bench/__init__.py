"""Benchmarks: images per second of the presets, the recipes, the pipeline and the runtimes.

Imports every floor below the command line.
"""
