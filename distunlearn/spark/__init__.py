"""Thin Spark layer: sessions, sources, distributed passes and Delta writes. No maths here."""
