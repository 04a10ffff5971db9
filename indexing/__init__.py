"""Producer-embedding indexes: the factory, ANN recall validation, manifests, publishing."""
