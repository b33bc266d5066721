"""Reading, rendering, labelling, splitting and weighting training data; torch-free."""

from loralab.data.errors import BadRow, BadRowsError, DataError, RowValueError
from loralab.data.labels import (
    Encoded,
    LabelMap,
    build_label_map,
    check_label_aliases,
    encode_rows,
    infer_num_labels,
    load_label_map,
    save_label_map,
    unseen_note,
)
from loralab.data.overlap import file_digest, leakage_note, same_file, shared_texts
from loralab.data.readers import Row, RowSet, read_rows
from loralab.data.report import DatasetReport
from loralab.data.splits import extract, stratified_split
from loralab.data.template import Template, compile_template, render
from loralab.data.values import integer_float_aliases, label_value
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
    "check_label_aliases",
    "class_weights",
    "class_weights_for",
    "compile_template",
    "encode_rows",
    "extract",
    "file_digest",
    "infer_num_labels",
    "integer_float_aliases",
    "label_value",
    "leakage_note",
    "load_label_map",
    "read_rows",
    "render",
    "same_file",
    "save_class_weights",
    "save_label_map",
    "shared_texts",
    "stratified_split",
    "unseen_note",
]
