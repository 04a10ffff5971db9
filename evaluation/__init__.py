"""Offline evaluation: metrics, the narrow candidate sources (baselines), reports, gating."""
