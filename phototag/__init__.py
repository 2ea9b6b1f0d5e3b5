"""phototag: auto-tag a photo library with RAM/RAM++/Tag2Text or a built-in model."""

__version__ = "0.1.0"
