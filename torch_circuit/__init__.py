"""torch-circuit: flat layer lists with named skip connections and repeated blocks."""

from .circuit import Circuit
from .config.files import load, read_config, save, write_config
from .config.registry import register
from .markers import EndBlock, GetInput, LambdaLayer, Output, PerRepeat, SaveInput, StartBlock
from .plan import UnusedSaveWarning
from .porting import CopyReport, copy_weights

__all__ = [
    "Circuit",
    "CopyReport",
    "EndBlock",
    "GetInput",
    "LambdaLayer",
    "Output",
    "PerRepeat",
    "SaveInput",
    "StartBlock",
    "UnusedSaveWarning",
    "copy_weights",
    "load",
    "read_config",
    "register",
    "save",
    "write_config",
]

__version__ = "0.1.0"
