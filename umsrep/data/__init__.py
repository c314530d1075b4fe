"""Data: manifests, dataset importers, image I/O, the preprocessing cache, datasets and splits."""
