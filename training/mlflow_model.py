"""MLflow "model from code": MLflow stores this file as code and the weights as artifacts,
so loading the registered model never unpickles anything.

predict() takes consumer feature rows (the columns of the consumer tower spec, as the feature
transforms and Feast produce them) and returns one unit-length embedding per row."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class TwoTowerConsumer(PythonModel):
    """The consumer tower of a followrec two-tower model."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        """Rebuild the model from its state dict and JSON metadata."""
        from followrec.training.model_io import load_model_dir

        self.trained = load_model_dir(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        """Embeddings of consumer feature rows."""
        from followrec.training.data import tower_tensors
        from followrec.training.train import encode

        trained = self.trained
        frame = model_input.reset_index(drop=True)
        tensors = tower_tensors(
            frame,
            trained.schema["consumer"],
            trained.dense_stats["consumer"],
            trained.train_config["max_history"],
            trained.n_ids,
        )
        embeddings = encode(trained.model.consumer, tensors).numpy().astype(np.float64)
        return pd.DataFrame({"embedding": list(embeddings)})


mlflow.models.set_model(TwoTowerConsumer())
