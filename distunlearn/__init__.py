"""distunlearn: make a lakehouse table forget a whole domain of data with the fewest deletions."""

__version__ = "0.1.0"
