"""PyTorch front-end: ``from conelayers.torch import CvxpyLayer``.

Importing this module imports torch; ``import conelayers`` alone does not.
"""

from ._layer import CvxpyLayer as CvxpyLayer

__all__ = ["CvxpyLayer"]
