"""Raw data contracts, loaders, the synthetic generator, splits and feature transforms."""
