"""Data: manifests, dataset importers, image I/O, the preprocessing cache, datasets and splits."""

MASK_COLUMN = "mask"


def is_mask_column(column: str) -> bool:
    """True for a segmentation task's column: ``mask`` (the manifest's ``mask_path``) or
    ``mask_<name>`` (its ``mask_<name>_path``, e.g. JSRT's ``mask_heart``)."""
    return column == MASK_COLUMN or column.startswith(MASK_COLUMN + "_")


def mask_path_column(column: str) -> str:
    """The manifest column of a segmentation task's mask: ``mask`` -> ``mask_path``."""
    return f"{column}_path"
