"""Summaries people read: plots, leaderboard, comparisons, run cost, provenance."""
