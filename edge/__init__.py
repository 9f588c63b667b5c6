"""fallwatch edge daemon: cameras in, skeletons and fall alerts out."""

__version__ = "0.1.0"
