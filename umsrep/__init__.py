"""umsrep: unified modality-specific representations (UMS-Rep) for medical image analysis."""

__version__ = "0.1.0"
