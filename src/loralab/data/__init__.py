"""Reading, rendering, labelling, splitting and weighting training data; torch-free."""

from loralab.data.errors import BadRow, BadRowsError, DataError, RowValueError
from loralab.data.labels import (
    Encoded,
    LabelMap,
    build_label_map,
    encode_rows,
    infer_num_labels,
    load_label_map,
    save_label_map,
)
from loralab.data.readers import Row, RowSet, read_rows
from loralab.data.report import DatasetReport
from loralab.data.splits import extract, stratified_split
from loralab.data.template import Template, compile_template, render
from loralab.data.weights import class_weights, class_weights_for, save_class_weights

__all__ = [
    "BadRow",
    "BadRowsError",
    "DataError",
    "DatasetReport",
    "Encoded",
    "LabelMap",
    "Row",
    "RowSet",
    "RowValueError",
    "Template",
    "build_label_map",
    "class_weights",
    "class_weights_for",
    "compile_template",
    "encode_rows",
    "extract",
    "infer_num_labels",
    "load_label_map",
    "read_rows",
    "render",
    "save_class_weights",
    "save_label_map",
    "stratified_split",
]
