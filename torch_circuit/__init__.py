"""torch-circuit: flat layer lists with named skip connections and repeated blocks."""

from .circuit import Circuit
from .markers import EndBlock, GetInput, LambdaLayer, Output, PerRepeat, SaveInput, StartBlock
from .plan import UnusedSaveWarning

__all__ = [
    "Circuit",
    "EndBlock",
    "GetInput",
    "LambdaLayer",
    "Output",
    "PerRepeat",
    "SaveInput",
    "StartBlock",
    "UnusedSaveWarning",
]

__version__ = "0.1.0"
