"""Data specs and loaders (no torchvision): ``builtin:``, ``cifar10:``, ``folder:``, ``npz:`` -> Dataset."""

from flatkit.data.dataset import Dataset, load_dataset
from flatkit.data.npz import write_uint8_npz
from flatkit.data.spec import builtin_names, normalise_spec, parse_data_spec, parse_spec, spec_kind

__all__ = [
    "Dataset",
    "builtin_names",
    "load_dataset",
    "normalise_spec",
    "parse_data_spec",
    "parse_spec",
    "spec_kind",
    "write_uint8_npz",
]
