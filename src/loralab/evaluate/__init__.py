"""Evaluation: metrics computed from predictions (scikit-learn as the reference), buckets, guards."""
