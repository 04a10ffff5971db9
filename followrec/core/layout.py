"""Where each step reads and writes inside a run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each step reads and writes inside a run folder."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    @property
    def staged_raw(self) -> Path:
        return self.root / "staged" / "raw"

    @property
    def staged_features(self) -> Path:
        return self.root / "staged" / "features"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def training_set(self) -> Path:
        return self.root / "training_set"
