"""Numpy core: moments, the pooled Gaussian model, scoring rules and budget selection.

Nothing in this package imports Spark, so every piece is testable on plain arrays.
"""
