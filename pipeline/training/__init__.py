"""Training as data: the dataset of a trading day (window, time split, train-only normalization) and the env
factories that build training and validation envs from it. Framework-free: the Dagster assets wrap it."""

from pipeline.training.dataset import (
    DatasetConfig,
    DaySplit,
    TrainingDataset,
    build_dataset,
    data_version,
    load_dataset,
    save_dataset,
    window_split,
)

__all__ = [
    "DatasetConfig",
    "DaySplit",
    "TrainingDataset",
    "build_dataset",
    "data_version",
    "load_dataset",
    "save_dataset",
    "window_split",
]
