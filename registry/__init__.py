"""The registry room: MLflow tracking, registry aliases, the promotion gate, promotion,
rollback and index refresh for the champion."""
