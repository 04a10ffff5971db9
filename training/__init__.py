"""Two-tower retrieval: towers, objectives, data tensors, the training loop, MLflow model."""
