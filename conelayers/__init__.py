"""conelayers: convex optimization problems as differentiable layers.

A CVXPY problem that follows the DPP rules is canonicalized once into a cone
program whose data depend affinely on the parameters; every call solves a
whole batch and differentiates exactly, in reverse (``Solution.adjoint``) and
forward (``Solution.derivative``) mode. This package is the NumPy core; the
PyTorch and TensorFlow front-ends live in ``conelayers.torch`` and
``conelayers.tensorflow`` and are imported only when asked for.
"""

from importlib.metadata import PackageNotFoundError, version

from ._cones import PSD as PSD
from ._cones import SOC as SOC
from ._cones import ConeLayout as ConeLayout
from ._cones import Exp as Exp
from ._cones import ExpDual as ExpDual
from ._cones import Nonneg as Nonneg
from ._cones import Zero as Zero
from ._diff import DerivativeMode as DerivativeMode
from ._dpp import DPPReport as DPPReport
from ._dpp import Finding as Finding
from ._dpp import Rule as Rule
from ._dpp import check_dpp as check_dpp
from ._errors import ConelayersError as ConelayersError
from ._errors import ConelayersWarning as ConelayersWarning
from ._errors import DerivativeWarning as DerivativeWarning
from ._errors import DPPError as DPPError
from ._errors import ExecutorError as ExecutorError
from ._errors import InaccurateSolutionWarning as InaccurateSolutionWarning
from ._errors import ParameterError as ParameterError
from ._errors import SolverError as SolverError
from ._errors import Status as Status
from ._layer import CvxpyLayer as CvxpyLayer
from ._program import ParametricConeProgram as ParametricConeProgram
from ._solve import Solution as Solution
from ._solvers import available_solvers as available_solvers

try:
    __version__ = version("conelayers")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
