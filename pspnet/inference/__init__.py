"""Inference: the one ``Segmenter``, the exported runtimes, and the jobs on trained models
(evaluate, predict, video, export) with their figures.

Imports the models, data and ground floors, nothing above.
"""
