"""Scoring and pictures: evaluate, visualize; metrics, inference, panels."""
