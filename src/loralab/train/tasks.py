"""What differs between the tasks, behind one interface that `Session` (training) and `loralab evaluate
RUN_DIR` (a reloaded run) call: read and tokenise the data, configure the model, collate, score
during training, score at the end and write predictions.csv.

- `ClassificationTask` (seq-cls): a label map built from the training labels, class-weighted loss,
  accuracy / F1 / frequency buckets from `loralab.evaluate.classification`.
- `LanguageModelingTask` (causal-lm, seq2seq): prompt/response rows, loss on the response only,
  perplexity and generation metrics (`loralab.train.lm`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralab.config.models import ExperimentConfig, carves_validation, lm_validation_rows
from loralab.data import (
    LabelMap,
    RowSet,
    build_label_map,
    check_label_aliases,
    class_weights_for,
    encode_rows,
    extract,
    load_label_map,
    read_rows,
    save_class_weights,
    stratified_split,
)
from loralab.data.fields import lm_read_fields
from loralab.errors import ConfigError, LoralabError, Problem
from loralab.evaluate.classification import classification_metrics, evaluate_classification
from loralab.io import is_main_process, write_json
from loralab.train.batching import Examples, PadCollator
from loralab.train.encode import classification_examples
from loralab.train.lm import lm_collator, lm_examples, lm_loss, score_lm, write_generations_csv
from loralab.train.predict import predict_classes, write_predictions_csv

DEFAULT_VALIDATION_SIZE = 0.1
# Rows of the evaluation split that get a generated prediction: generation is the slow part on a CPU
# (the loss covers every row). A run's end is kept short; `loralab evaluate` generates for more.
MAX_GENERATE_TRAIN = 64
MAX_GENERATE_EVALUATE = 200


@dataclass
class Scored:
    """A split scored by a model: metrics.json's content and the writer of predictions.csv."""

    metrics: dict[str, Any]
    write_predictions: Callable[[Path], None]


@dataclass
class EvalFile:
    """Rows read from a file to score a reloaded run on."""

    path: Path
    rows: list[Any]
    label_ids: list[int] = field(default_factory=list)  # seq-cls: the rows' ids in the run's label map
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the metrics


class TaskStrategy(ABC):
    """The task-specific steps of a run. State a task builds (label map, counts, weights) lives here."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.label_map: LabelMap | None = None
        self.train_counts: dict[int, int] = {}
        self.class_weights: list[float] | None = None
        self.notes: list[str] = []

    def _problem(self, key: str, what: str, fix: str) -> ConfigError:
        return ConfigError([Problem(str(self.cfg.source), key, what, fix)])

    # ---- training ----------------------------------------------------------------------------
    @abstractmethod
    def prepare_data(self, tokenizer: Any, run_dir: Path, seed: int) -> dict[str, Examples]:
        """Tokenised train / validation / test splits; writes the run's data files."""

    def configure_model(self, model: Any) -> None:  # noqa: B027 (an optional hook)
        """Adjust the loaded base model to the data (before LoRA is applied)."""

    @abstractmethod
    def collator(self, model: Any, tokenizer: Any) -> PadCollator: ...

    @abstractmethod
    def eval_scalars(
        self, model: Any, ex: Examples, collator: PadCollator, batch_size: int
    ) -> dict[str, float]:
        """The numbers logged at each evaluation during training."""

    @abstractmethod
    def read_split(self, key: str) -> RowSet | None:
        """data.<key> ("train_file", ...) read with the fields training reads it with; None when unset.
        Preflight reads the files through this, so a file training would refuse is refused there."""

    # ---- scoring (end of training and reloaded runs) -----------------------------------------
    @abstractmethod
    def score(
        self,
        model: Any,
        tokenizer: Any,
        ex: Examples,
        collator: PadCollator,
        *,
        split: str,
        batch_size: int,
        max_generate: int = MAX_GENERATE_TRAIN,
        progress: Callable[[int], None] | None = None,
    ) -> Scored: ...

    # ---- a reloaded run ----------------------------------------------------------------------
    def restore(self, run_dir: Path) -> None:  # noqa: B027 (an optional hook)
        """Load the state training wrote to the run directory (label map, class counts)."""

    @abstractmethod
    def read_eval_file(self, path: Path) -> EvalFile: ...

    @abstractmethod
    def eval_examples(self, tokenizer: Any, data: EvalFile) -> Examples: ...


def task_for(cfg: ExperimentConfig) -> TaskStrategy:
    return ClassificationTask(cfg) if cfg.model.task == "seq-cls" else LanguageModelingTask(cfg)


def _labels(rows: list[Any]) -> list[str]:
    return [r.label or "" for r in rows]  # a classification row always has one (readers reject it otherwise)


def _row_ids(file: str | Path, rows: list[Any]) -> list[str]:
    return [f"{Path(file).name}:{r.line}" for r in rows]


class ClassificationTask(TaskStrategy):
    def read_split(self, key: str) -> RowSet | None:
        d = self.cfg.data
        path = getattr(d, key)
        if not path:
            return None
        rowset = read_rows(
            self.cfg.resolve_path(path),
            text_field=d.text_field,
            text_template=d.text_template,
            label_field=d.label_field,
        )
        check_label_aliases(rowset)  # "1" and "1.0" would train as two classes
        return rowset

    def _read(self, key: str) -> RowSet | None:
        rowset = self.read_split(key)
        skipped = rowset.skipped_summary() if rowset is not None else None
        if skipped:
            self.notes.append(skipped)
        return rowset

    def _training_rows(self, seed: int) -> tuple[RowSet, list[Any], RowSet | None, list[Any] | None]:
        """(train file, training rows, validation file, validation rows) as the run will use them."""
        d = self.cfg.data
        train = self._read("train_file")
        if train is None:
            raise self._problem("data.train_file", "no training data", "set it")
        rows = train.rows
        if d.extract_ratio:
            rows = extract(rows, _labels(rows), d.extract_ratio, d.seed or seed)
        val = self._read("validation_file")
        val_rows = val.rows if val is not None else None
        if val is None and carves_validation(self.cfg):
            rows, val_rows = stratified_split(rows, _labels(rows), DEFAULT_VALIDATION_SIZE, seed)
            self.notes.append(
                f"validation: {len(val_rows)} rows split from training (stratified, seed {seed})"
            )
        # Without evaluation during training and without a validation file, every row trains.
        return train, rows, val, val_rows

    def prepare_data(self, tokenizer: Any, run_dir: Path, seed: int) -> dict[str, Examples]:
        d = self.cfg.data
        train, rows, val, val_rows = self._training_rows(seed)
        test = self._read("test_file")
        self.label_map = lm = build_label_map(r.label for r in rows)
        n_labels = self.cfg.model.num_labels
        if n_labels is not None and n_labels != len(lm):
            raise self._problem(
                "model.num_labels",
                f"is {n_labels} but the training data has {len(lm)} labels",
                f"set num_labels: {len(lm)}",
            )
        self.cfg.model.num_labels = len(lm)
        if is_main_process():
            lm.save(run_dir / "labels.json")
        ids = lm.label2id
        self.train_counts = dict(Counter(ids[r.label] for r in rows))
        # Frequency buckets at evaluation time rank classes by these counts.
        write_json(
            run_dir / "train_counts.json", {lab: self.train_counts.get(i, 0) for lab, i in ids.items()}
        )
        weights = class_weights_for(d.class_weights, [r.label for r in rows], lm)
        if weights is not None and is_main_process():
            assert d.class_weights is not None
            save_class_weights(weights, lm, run_dir / "class_weights.json", d.class_weights.alpha)
        self.class_weights = weights
        report: dict[str, Any] = {
            "train_file": train.file,
            "bad_rows": [b.__dict__ for b in train.bad_rows[:200]],
        }
        splits: dict[str, Examples] = {}
        for name, split_rows, src in (
            ("train", rows, train),
            ("validation", val_rows, val),
            ("test", None, test),
        ):
            if split_rows is None and src is None:
                continue
            enc = encode_rows(split_rows if split_rows is not None else src.rows, lm)  # type: ignore[union-attr]
            texts = [r.text or "" for r in enc.rows]
            file = src.file if src is not None else train.file
            splits[name] = classification_examples(
                tokenizer, texts, enc.label_ids, _row_ids(file, enc.rows), self.cfg.max_length
            )
            report[name] = {
                "rows": len(enc.rows),
                "unseen_labels": enc.unseen,
                "truncated": splits[name].truncated,
                "bad_rows": len(src.bad_rows) if src is not None else 0,
            }
            if enc.unseen:
                self.notes.append(f"{name}: {enc.unseen_summary()}")
        if "test" not in splits and "validation" not in splits:
            raise self._problem(
                "data.test_file",
                "nothing to evaluate the run on: no test_file and no evaluation during training",
                "set data.test_file (or data.validation_file, or training_args.eval_strategy: epoch)",
            )
        write_json(run_dir / "data_report.json", report)
        return splits

    def configure_model(self, model: Any) -> None:
        assert self.label_map is not None
        model.config.id2label = self.label_map.id2label
        model.config.label2id = self.label_map.label2id

    def collator(self, model: Any, tokenizer: Any) -> PadCollator:
        return PadCollator(tokenizer.pad_token_id, padding_side=tokenizer.padding_side)

    def eval_scalars(
        self, model: Any, ex: Examples, collator: PadCollator, batch_size: int
    ) -> dict[str, float]:
        p = predict_classes(model, ex, collator, batch_size=batch_size)
        assert self.label_map is not None
        m = classification_metrics(ex.labels, p.pred, self.label_map.id2label, self.train_counts)
        return {k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1", "tail_f1")} | {"loss": p.loss}

    def score(
        self,
        model: Any,
        tokenizer: Any,
        ex: Examples,
        collator: PadCollator,
        *,
        split: str,
        batch_size: int,
        max_generate: int = MAX_GENERATE_TRAIN,
        progress: Callable[[int], None] | None = None,
    ) -> Scored:
        p = predict_classes(model, ex, collator, batch_size=batch_size, progress=progress)
        lm = self.label_map
        assert lm is not None
        metrics = evaluate_classification(
            ex.labels, p.pred, p.prob, lm.id2label, self.train_counts, texts=ex.texts
        )
        metrics.update(split=split, loss=p.loss)
        return Scored(metrics, lambda path: write_predictions_csv(path, ex, p, lm.id2label))

    def restore(self, run_dir: Path) -> None:
        self.label_map = lm = load_label_map(run_dir / "labels.json")
        counts = _read_run_json(run_dir / "train_counts.json")
        self.train_counts = {lm.label2id[k]: int(v) for k, v in counts.items() if k in lm.label2id}

    def read_eval_file(self, path: Path) -> EvalFile:
        assert self.label_map is not None
        d = self.cfg.data
        rowset = read_rows(
            path, text_field=d.text_field, text_template=d.text_template, label_field=d.label_field
        )
        enc = encode_rows(rowset.rows, self.label_map)
        if not enc.rows:
            raise LoralabError(f"{path}: no row has a label the run was trained on ({enc.unseen_summary()})")
        return EvalFile(path, enc.rows, enc.label_ids, {"file": str(path), "unseen_labels": enc.unseen})

    def eval_examples(self, tokenizer: Any, data: EvalFile) -> Examples:
        texts = [r.text or "" for r in data.rows]
        return classification_examples(
            tokenizer, texts, data.label_ids, _row_ids(data.path, data.rows), self.cfg.max_length
        )


class LanguageModelingTask(TaskStrategy):
    def _read_path(self, path: Path) -> RowSet:
        d = self.cfg.data
        fields = lm_read_fields(
            prompt_field=d.prompt_field,
            text_field=d.text_field,
            text_template=d.text_template,
            response_field=d.response_field,
            label_field=d.label_field,
        )
        if fields is None:
            raise self._problem(
                "data",
                f"{self.cfg.model.task} needs a prompt and a response",
                "set data.prompt_field (or text_field/text_template) and data.response_field",
            )
        text, template, label = fields
        return read_rows(path, text_field=text, text_template=template, label_field=label)

    def _read(self, path: str | None) -> RowSet | None:
        return self._read_path(self.cfg.resolve_path(path)) if path else None

    def read_split(self, key: str) -> RowSet | None:
        return self._read(getattr(self.cfg.data, key))

    def _examples(self, tokenizer: Any, rows: list[Any], file: str | Path) -> Examples:
        texts, targets = [r.text or "" for r in rows], [r.label or "" for r in rows]
        ex = lm_examples(tokenizer, self.cfg.model.task, texts, targets, self.cfg.max_length)
        ex.row_ids = _row_ids(file, rows)
        return ex

    def prepare_data(self, tokenizer: Any, run_dir: Path, seed: int) -> dict[str, Examples]:
        d = self.cfg.data
        train = self._read(d.train_file)
        if train is None:
            raise self._problem("data.train_file", "no training data", "set it")
        rows, val = train.rows, self._read(d.validation_file)
        val_rows, val_file = (val.rows, val.file) if val is not None else (None, train.file)
        if val_rows is None:
            n_val = lm_validation_rows(len(rows))
            rows, val_rows = rows[n_val:], rows[:n_val]
            self.notes.append(f"validation: the first {n_val} training rows")
        test = self._read(d.test_file)
        splits: dict[str, Examples] = {}
        report: dict[str, Any] = {}
        for name, split, file in (
            ("train", rows, train.file),
            ("validation", val_rows, val_file),
            ("test", test.rows if test else None, test.file if test else ""),
        ):
            if not split:
                continue
            splits[name] = ex = self._examples(tokenizer, split, file)
            report[name] = {"rows": len(ex), "truncated": ex.truncated}
        write_json(run_dir / "data_report.json", report)
        return splits

    def collator(self, model: Any, tokenizer: Any) -> PadCollator:
        return lm_collator(model, tokenizer.pad_token_id)

    def eval_scalars(
        self, model: Any, ex: Examples, collator: PadCollator, batch_size: int
    ) -> dict[str, float]:
        return {"loss": lm_loss(model, ex, collator)}

    def score(
        self,
        model: Any,
        tokenizer: Any,
        ex: Examples,
        collator: PadCollator,
        *,
        split: str,
        batch_size: int,
        max_generate: int = MAX_GENERATE_TRAIN,
        progress: Callable[[int], None] | None = None,
    ) -> Scored:
        metrics, preds, refs = score_lm(
            model, tokenizer, ex, collator, split=split, max_generate=max_generate
        )
        return Scored(metrics, lambda path: write_generations_csv(path, ex, refs, preds))

    def read_eval_file(self, path: Path) -> EvalFile:
        rows = self._read_path(path).rows
        if not rows:
            raise LoralabError(f"{path}: no usable rows to evaluate")
        return EvalFile(path, rows)

    def eval_examples(self, tokenizer: Any, data: EvalFile) -> Examples:
        return self._examples(tokenizer, data.rows, data.path)


def _read_run_json(path: Path) -> Any:
    if not path.is_file():
        raise LoralabError(f"{path.parent} is not a complete run directory: {path.name} is missing")
    return json.loads(path.read_text(encoding="utf-8"))
