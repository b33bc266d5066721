"""One training run, in the fixed outline of litgpt's finetune scripts: setup, fit, validate."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from loralab.config.models import ExperimentConfig
from loralab.data import (
    LabelMap,
    build_label_map,
    class_weights_for,
    encode_rows,
    extract,
    read_rows,
    save_class_weights,
    stratified_split,
)
from loralab.errors import ConfigError, LoralabError, Problem
from loralab.train.batching import ExampleDataset, Examples, PadCollator
from loralab.train.run import is_main_process, write_json

DEFAULT_VALIDATION_SIZE = 0.1


class Session:
    def __init__(self, cfg: ExperimentConfig, run_dir: Path, *, quiet: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet)
        self.notes: list[str] = []
        self.trainer: Any = None
        self.mlflow: Any = None
        self.splits: dict[str, Examples] = {}
        self.label_map: LabelMap | None = None
        self.train_counts: dict[int, int] = {}
        self.plan: Any = None
        self.policy: Any = None

    # ---- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from loralab.train.loading import apply_lora, load_model, load_tokenizer, model_input_names
        from loralab.train.precision import choose_precision

        if self.cfg.model.task != "seq-cls":
            from loralab.train.lm import setup_lm

            setup_lm(self)
            return
        seed = int(self.cfg.training_args.get("seed", 42))
        torch.manual_seed(seed)
        self.policy = choose_precision(self.cfg)
        self.console.print(f"precision: {self.policy.reason}")
        tokenizer = load_tokenizer(self.cfg)
        self.tokenizer = tokenizer
        self._prepare_classification_data(tokenizer, seed)
        model = load_model(self.cfg, self.policy, run_dir=self.run_dir, tokenizer=tokenizer)
        assert self.label_map is not None
        model.config.id2label = self.label_map.id2label
        model.config.label2id = self.label_map.label2id
        self.model = apply_lora(model, self.cfg)
        from loralab.train.loading import lora_kwargs

        _, self.plan = lora_kwargs(self.cfg)
        if "token_type_ids" not in model_input_names(model, tokenizer):
            for ex in self.splits.values():
                ex.token_type_ids = None
        self.collator = PadCollator(tokenizer.pad_token_id, padding_side=tokenizer.padding_side)
        self._build_trainer()

    def _read(self, key: str) -> Any:
        d = self.cfg.data
        path = getattr(d, key)
        if not path:
            return None
        return read_rows(
            self.cfg.resolve_path(path),
            text_field=d.text_field,
            text_template=d.text_template,
            label_field=d.label_field,
        )

    def _prepare_classification_data(self, tokenizer: Any, seed: int) -> None:
        from loralab.train.encode import classification_examples

        d = self.cfg.data
        if not d.train_file:
            raise ConfigError(
                [Problem(str(self.cfg.source), "data.train_file", "no training data", "set it")]
            )
        train = self._read("train_file")
        rows = train.rows
        if d.extract_ratio:
            rows = extract(rows, [r.label for r in rows], d.extract_ratio, d.seed or seed)
        val = self._read("validation_file")
        test = self._read("test_file")
        evaluates = str(self.cfg.training_args.get("eval_strategy", "no")) != "no"
        val_rows = val.rows if val is not None else None
        if val is None and evaluates:
            rows, val_rows = stratified_split(rows, [r.label for r in rows], DEFAULT_VALIDATION_SIZE, seed)
            self.notes.append(
                f"validation: {len(val_rows)} rows split from training (stratified, seed {seed})"
            )
        # Without evaluation during training and without a validation file, every row trains.
        self.label_map = lm = build_label_map(r.label for r in rows)
        n_labels = self.cfg.model.num_labels
        if n_labels is not None and n_labels != len(lm):
            raise ConfigError(
                [
                    Problem(
                        str(self.cfg.source),
                        "model.num_labels",
                        f"is {n_labels} but the training data has {len(lm)} labels",
                        f"set num_labels: {len(lm)}",
                    )
                ]
            )
        self.cfg.model.num_labels = len(lm)
        if is_main_process():
            lm.save(self.run_dir / "labels.json")
        ids = lm.label2id
        self.train_counts = dict(Counter(ids[r.label] for r in rows))
        # Frequency buckets at evaluation time rank classes by these counts.
        write_json(
            self.run_dir / "train_counts.json", {lab: self.train_counts.get(i, 0) for lab, i in ids.items()}
        )
        weights = class_weights_for(d.class_weights, [r.label for r in rows], lm)
        if weights is not None and is_main_process():
            assert d.class_weights is not None
            save_class_weights(weights, lm, self.run_dir / "class_weights.json", d.class_weights.alpha)
        self.class_weights = weights
        max_len = int(d.max_length or 128)
        report: dict[str, Any] = {
            "train_file": train.file,
            "bad_rows": [b.__dict__ for b in train.bad_rows[:200]],
        }
        for name, split_rows, src in (
            ("train", rows, train),
            ("validation", val_rows, val),
            ("test", None, test),
        ):
            if split_rows is None and src is None:
                continue
            enc = encode_rows(split_rows if split_rows is not None else src.rows, lm)
            texts = [r.text or "" for r in enc.rows]
            file = src.file if src is not None else train.file
            row_ids = [f"{Path(file).name}:{r.line}" for r in enc.rows]
            self.splits[name] = classification_examples(tokenizer, texts, enc.label_ids, row_ids, max_len)
            report[name] = {
                "rows": len(enc.rows),
                "unseen_labels": enc.unseen,
                "truncated": self.splits[name].truncated,
                "bad_rows": len(src.bad_rows) if src is not None else 0,
            }
            if enc.unseen:
                self.notes.append(f"{name}: {enc.unseen_summary()}")
        if "test" not in self.splits and "validation" not in self.splits:
            raise ConfigError(
                [
                    Problem(
                        str(self.cfg.source),
                        "data.test_file",
                        "nothing to evaluate the run on: no test_file and no evaluation during training",
                        "set data.test_file (or data.validation_file, or training_args.eval_strategy: epoch)",
                    )
                ]
            )
        write_json(self.run_dir / "data_report.json", report)

    def _training_args(self) -> Any:
        from transformers import TrainingArguments

        from loralab.train.precision import training_args_overrides

        ta = dict(self.cfg.training_args)
        ta.pop("deepspeed", None)
        if ta.get("train_sampling_strategy") == "group_by_length":
            ta.pop("train_sampling_strategy")  # loralab's length buckets do this (and keep eval aligned)
        ta.update(training_args_overrides(self.policy))
        ta.update(
            output_dir=str(self.run_dir / "checkpoints"),
            report_to="none",  # loralab logs to MLflow itself, with failures contained
            disable_tqdm=True,
            remove_unused_columns=False,
            label_names=["labels"],
        )
        if self.cfg.deepspeed is not None:
            ta["deepspeed"] = self.cfg.deepspeed
        if "validation" not in self.splits:
            ta["eval_strategy"] = "no"
            ta["load_best_model_at_end"] = False
        return TrainingArguments(**ta)

    def _build_trainer(self) -> None:
        from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback

        from loralab.train.callbacks import RichProgressCallback, StepLogCallback
        from loralab.train.trainer import LoralabTrainer

        args = self._training_args()
        self.trainer = trainer = LoralabTrainer(
            model=self.model,
            args=args,
            train_dataset=ExampleDataset(self.splits["train"]),
            # Only to satisfy the Trainer's checks: evaluation runs through evaluate_fn (aligned by index).
            eval_dataset=ExampleDataset(self.splits["validation"]) if "validation" in self.splits else None,
            class_weights=self.class_weights,
            evaluate_fn=self._eval_scalars if "validation" in self.splits else None,
            collator=self.collator,
            data_collator=self.collator,
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)  # rich progress and train_log.jsonl replace both
        trainer.add_callback(StepLogCallback(self.run_dir / "train_log.jsonl", trainer))
        trainer.add_callback(RichProgressCallback(trainer, quiet=self.quiet))
        patience = self.cfg.raw.get("early_stopping_patience") or (self.cfg.experiment or {}).get(
            "early_stopping_patience"
        )
        if patience and args.load_best_model_at_end:
            trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=int(patience)))
        self._start_tracking()

    def _eval_scalars(self, model: Any) -> dict[str, float]:
        from loralab.evaluate.classification import classification_metrics
        from loralab.train.predict import predict_classes

        ex = self.splits["validation"]
        p = predict_classes(model, ex, self.collator, batch_size=self._eval_batch())
        assert self.label_map is not None
        m = classification_metrics(ex.labels, p.pred, self.label_map.id2label, self.train_counts)
        return {k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1", "tail_f1")} | {"loss": p.loss}

    def _eval_batch(self) -> int:
        return int(self.cfg.training_args.get("per_device_eval_batch_size") or 64)

    def _start_tracking(self) -> None:
        from loralab.train.tracking import mlflow_callback

        self.mlflow = mlflow_callback(self) if is_main_process() else None
        if self.mlflow is not None:
            self.trainer.add_callback(self.mlflow)

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> None:
        from loralab.train.trainer import complete_checkpoints

        ckpt = None
        if resume:
            done = complete_checkpoints(self.run_dir / "checkpoints")
            if not done:
                raise LoralabError(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}")
            ckpt = str(done[-1])
            self.console.print(f"resuming from {ckpt}")
        out = self.trainer.train(resume_from_checkpoint=ckpt)
        self.train_output = out
        if not is_main_process():
            return
        self.model.save_pretrained(self.run_dir / "adapter", safe_serialization=True)
        self.tokenizer.save_pretrained(self.run_dir / "tokenizer")

    # ---- validate ---------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        if self.cfg.model.task != "seq-cls":
            from loralab.train.lm import validate_lm

            return validate_lm(self)
        from loralab.evaluate.classification import evaluate_classification
        from loralab.train.predict import predict_classes, write_predictions_csv

        split = "test" if "test" in self.splits else "validation"
        ex = self.splits[split]
        p = predict_classes(self.model, ex, self.collator, batch_size=self._eval_batch())
        assert self.label_map is not None
        metrics = evaluate_classification(
            ex.labels, p.pred, p.prob, self.label_map.id2label, self.train_counts, texts=ex.texts
        )
        metrics.update(split=split, loss=p.loss)
        for w in metrics["warnings"]:
            self.console.print(f"[bold red]warning:[/] {w}")
        write_predictions_csv(self.run_dir / "predictions.csv", ex, p, self.label_map.id2label)
        write_json(self.run_dir / "metrics.json", metrics)
        self.metrics = metrics
        return metrics

    def write_record(self, seconds: float) -> dict[str, Any]:
        from loralab.train.record import build_record, environment

        record = build_record(self, seconds)
        write_json(self.run_dir / "record.json", record)
        write_json(self.run_dir / "environment.json", environment())
        if self.mlflow is not None:
            scalars = {
                k: v for k, v in self.metrics.items() if isinstance(v, int | float) and math.isfinite(v)
            }
            files = ["metrics.json", "record.json", "predictions.csv", "labels.json", "train_log.jsonl"]
            self.mlflow.finish(scalars, [self.run_dir / f for f in files] + [self.run_dir / "adapter"])
        return record

    def abort(self, exc: BaseException) -> None:
        """Keep what the failed run produced; close tracking with FAILED."""
        if self.mlflow is not None:
            self.mlflow.finish({}, [self.run_dir / "train_log.jsonl", self.run_dir / "status.json"], "FAILED")
