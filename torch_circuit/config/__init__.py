"""Architecture as data: configs, the registry, and weights files that load without pickle.

`registry.py` knows the registered names; `torchnn.py` how `torch.nn`'s layers are described;
`describe*.py` write a circuit as a document (`Circuit.to_config`) and `build.py`/`entries.py`
read one back (`Circuit.from_config`); `state.py` proves each description by rebuilding it;
`files.py` saves and loads models and reads and writes JSON and YAML; `dataflow.py` holds the
parts of the format beyond one tensor: named inputs, outputs, `PerRepeat` and named layers.

This package imports nothing of `circuit.py` except in `files.py`, which `circuit.py` does not
import: `Circuit`'s methods reach `describe` and `build` directly.
"""
