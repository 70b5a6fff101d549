"""Typed errors of the ROS-free core; every user-facing failure is one of these."""


class R2FormerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(R2FormerError, ValueError):
    """A parameter or command-line value is out of range or inconsistent."""


class CheckpointError(R2FormerError):
    """A checkpoint file is missing, unsafe, or does not fit the model."""


class ImageError(R2FormerError, ValueError):
    """An image (raw or compressed) cannot be decoded into RGB."""


class BagError(R2FormerError):
    """A bag cannot be opened, lacks a topic, or is truncated/corrupt."""


class MapError(R2FormerError):
    """A map directory is missing, corrupt, or was built with another model."""
