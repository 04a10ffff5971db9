"""Bounds that the CLI, the service and the feature store share."""

MAX_K = 1000  # candidates per request
MAX_ACCOUNT_ID = 2**62  # ids beyond this cannot be Feast INT64 entity keys
