"""Data preparation: the synthetic arithmetic task, upstream dataset converters and row validation."""

from rpo_verl.data.arith import DATA_SOURCE as ARITH_DATA_SOURCE
from rpo_verl.data.arith import ArithConfig, make_rows, make_splits
from rpo_verl.data.converters import DATASETS
from rpo_verl.data.prepare import check_files, convert_dataset, default_data_dir, prepare_arith, write_parquet
from rpo_verl.data.validate import BadRowsError, validate_rows

__all__ = [
    "ARITH_DATA_SOURCE", "ArithConfig", "make_rows", "make_splits", "DATASETS", "check_files", "convert_dataset",
    "default_data_dir", "prepare_arith", "write_parquet", "BadRowsError", "validate_rows",
]
