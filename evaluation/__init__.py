"""Offline evaluation: the narrow candidate sources (baselines), the evaluate step, reports
and plots."""
