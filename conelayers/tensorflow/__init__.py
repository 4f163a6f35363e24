"""TensorFlow front-end: ``from conelayers.tensorflow import CvxpyLayer``.

Importing this module imports tensorflow (and keras); ``import conelayers``
alone does not.
"""

from ._layer import CvxpyLayer as CvxpyLayer
from ._layer import KerasCvxpyLayer as KerasCvxpyLayer

__all__ = ["CvxpyLayer", "KerasCvxpyLayer"]
