"""Evaluation: run a graph over a dataset, score every document, report.

``llmi eval DATASET --out DIR`` is the command; ``llmi.evaluation.runner`` runs it,
``llmi.evaluation.datasets`` reads the items, ``llmi.evaluation.scorers`` scores them and
``llmi.evaluation.report`` writes what a reader looks at.
"""
