"""One training run, in the fixed outline of litgpt's finetune scripts: setup, fit, validate.

What differs between classification and language modelling (data, collator, metrics, predictions)
is a `TaskStrategy` (`loralab.train.tasks`); the outline here is the same for every task.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback, TrainingArguments

from loralab.config.models import ExperimentConfig
from loralab.errors import LoralabError
from loralab.io import is_main_process, write_json
from loralab.plan.planner import Plan
from loralab.train.adapter_check import verify_saved_adapter
from loralab.train.batching import ExampleDataset, Examples
from loralab.train.callbacks import RichProgressCallback, StepLogCallback
from loralab.train.checkpoints import save_adapter
from loralab.train.loading import apply_lora, load_model, load_tokenizer, lora_kwargs, model_input_names
from loralab.train.precision import PrecisionPolicy, choose_precision, training_args_overrides
from loralab.train.prefix_cache import PrefixCache, PrefixCacheCallback, decide
from loralab.train.ranks import check_ranks_agree, run_fingerprint, torch_gather
from loralab.train.record import build_record, environment
from loralab.train.rundir import complete_checkpoints
from loralab.train.tasks import TaskStrategy, task_for
from loralab.train.tracking import mlflow_callback
from loralab.train.trainer import LoralabTrainer


class Session:
    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        *,
        quiet: bool = False,
        prefix_cache_dir: Path | None = None,
    ):
        self.cfg = cfg
        self.run_dir = run_dir
        # A study passes one folder for all its runs: runs that share the boundary share the cache.
        self.prefix_cache_dir = prefix_cache_dir or run_dir / "prefix_cache"
        self.prefix: PrefixCache | None = None
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet)
        self.task: TaskStrategy = task_for(cfg)
        self.notes: list[str] = self.task.notes  # the task's notes are the run's notes
        self.trainer: Any = None
        self.mlflow: Any = None
        self.splits: dict[str, Examples] = {}
        self.plan: Plan | None = None
        self.policy: PrecisionPolicy | None = None
        self.metrics: dict[str, Any] = {}

    # ---- setup ----------------------------------------------------------------------------
    def setup(self) -> None:
        seed = int(self.cfg.training_args.get("seed", 42))
        torch.manual_seed(seed)
        self.policy = choose_precision(self.cfg)
        self.console.print(f"precision: {self.policy.reason}")
        self.tokenizer = tokenizer = load_tokenizer(self.cfg)
        self.splits = self.task.prepare_data(tokenizer, self.run_dir, seed)
        model = load_model(self.cfg, self.policy, run_dir=self.run_dir, tokenizer=tokenizer)
        self.task.configure_model(model)
        self.model = apply_lora(model, self.cfg)
        _, self.plan = lora_kwargs(self.cfg)
        if "token_type_ids" not in model_input_names(model, tokenizer):
            for ex in self.splits.values():
                ex.token_type_ids = None
        self.collator: Any = self.task.collator(model, tokenizer)
        self._prefix_cache()
        self._build_trainer()

    def _prefix_cache(self) -> None:
        train = self.splits["train"]
        decision = decide(
            self.model,
            self.cfg,
            mode=self.cfg.prefix_cache,
            padding_side=self.collator.padding_side,
            probe_ids=train.input_ids[0] if len(train) else [],
            token_type=train.token_type_ids is not None,
        )
        if decision.used or decision.boundary or self.cfg.prefix_cache != "auto":
            # every layer training under the default is the common case: record.json says it quietly
            self.console.print(f"prefix cache ({self.cfg.prefix_cache}): {decision.reason}")
        self.prefix = cache = PrefixCache(decision, self.prefix_cache_dir)
        if decision.eval_mode_note:
            self.notes.append(decision.eval_mode_note)
            self.console.print(f"[bold yellow]note:[/] {decision.eval_mode_note}")
        if not decision.used:
            return
        # Under DDP rank 0 builds and the other ranks wait for its files (every rank building the
        # same cache would multiply the work and race on the same folder).
        wait = None if is_main_process() else float(self.cfg.training_args.get("ddp_timeout") or 1800)
        cache.prepare(self.cfg, self.model, self.splits, self.console, wait_seconds=wait)
        cache.install(self.model)
        self.collator = cache.collator(self.collator)

    def _training_args(self) -> Any:
        ta = dict(self.cfg.training_args)
        ta.pop("deepspeed", None)
        if ta.get("train_sampling_strategy") == "group_by_length":
            ta.pop("train_sampling_strategy")  # loralab's length buckets do this (and keep eval aligned)
        assert self.policy is not None, "setup() chooses the precision first"
        ta.update(training_args_overrides(self.policy))
        # `accelerate launch` exports its config's mixed_precision, which the Trainer uses whenever
        # bf16 and fp16 are both off: loralab's precision choice (device, weights' dtype) stays the truth.
        ours = "bf16" if self.policy.bf16 else "fp16" if self.policy.fp16 else "no"
        theirs = os.environ.get("ACCELERATE_MIXED_PRECISION")
        if theirs and theirs != ours:
            why = self.policy.reason
            self.notes.append(f"accelerate's mixed_precision {theirs} replaced by {ours} ({why})")
            os.environ["ACCELERATE_MIXED_PRECISION"] = ours
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
        args = self._training_args()
        self.trainer = trainer = LoralabTrainer(
            model=self.model,
            args=args,
            train_dataset=ExampleDataset(self.splits["train"]),
            # Only to satisfy the Trainer's checks: evaluation runs through evaluate_fn (aligned by index).
            eval_dataset=ExampleDataset(self.splits["validation"]) if "validation" in self.splits else None,
            class_weights=self.task.class_weights,
            evaluate_fn=self._eval_scalars if "validation" in self.splits else None,
            collator=self.collator,
            data_collator=self.collator,
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)  # rich progress and train_log.jsonl replace both
        trainer.add_callback(StepLogCallback(self.run_dir / "train_log.jsonl", trainer))
        trainer.add_callback(RichProgressCallback(trainer, quiet=self.quiet))
        if self.prefix is not None and self.prefix.used:
            trainer.add_callback(PrefixCacheCallback(self.prefix))
        exp = self.cfg.experiment or {}
        patience = self.cfg.raw.get("early_stopping_patience") or exp.get("early_stopping_patience")
        # Seed 000 stops when 5 evaluations gain less than 0.5 point: that is the threshold.
        threshold = self.cfg.raw.get("early_stopping_threshold") or exp.get("early_stopping_threshold")
        if patience and args.load_best_model_at_end:
            trainer.add_callback(
                EarlyStoppingCallback(
                    early_stopping_patience=int(patience), early_stopping_threshold=float(threshold or 0.0)
                )
            )
        if args.world_size > 1 and torch.distributed.is_initialized():
            check_ranks_agree(run_fingerprint(self.cfg), torch_gather)
            self.notes.append(f"all {args.world_size} processes load the same config and data (sha256)")
        self._start_tracking()

    def _eval_scalars(self, model: Any) -> dict[str, float]:
        return self.task.eval_scalars(model, self.splits["validation"], self.collator, self._eval_batch())

    def _eval_batch(self) -> int:
        return int(self.cfg.training_args.get("per_device_eval_batch_size") or 64)

    def _start_tracking(self) -> None:
        self.mlflow = (
            mlflow_callback(self.cfg, self.plan, self.run_dir, self.notes) if is_main_process() else None
        )
        if self.mlflow is not None:
            self.trainer.add_callback(self.mlflow)

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> None:
        ckpt = None
        if resume:
            done = complete_checkpoints(self.run_dir / "checkpoints")
            if not done:
                raise LoralabError(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}")
            ckpt = str(done[-1])
            self.console.print(f"resuming from {ckpt}")
            self.notes.append(f"resumed from {done[-1].name}")
        out = self.trainer.train(resume_from_checkpoint=ckpt)
        self.train_output = out
        save_adapter(self.trainer, self.run_dir / "adapter")
        if not is_main_process():
            return
        self.tokenizer.save_pretrained(self.run_dir / "tokenizer")
        if self.plan is not None:
            # ZeRO-3 / FSDP can write an empty or placeholder adapter and still "succeed": fail here
            # (the run then ends failed, with everything it wrote kept).
            verify_saved_adapter(self.run_dir / "adapter", self.plan)

    # ---- validate ---------------------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        """Whether the weights are split across processes (ZeRO-3, FSDP): then a forward pass on one
        rank gathers shards from all of them, and every rank must run it."""
        t = self.trainer
        if t is None:
            return False
        if t.is_fsdp_enabled:
            return True
        ds = getattr(getattr(t.accelerator.state, "deepspeed_plugin", None), "zero_stage", None)
        return bool(t.is_deepspeed_enabled and ds == 3)

    def validate(self) -> dict[str, Any]:
        """Score the final model; rank 0 writes the results. Under ZeRO-3 / FSDP every rank calls this
        and runs the same forward passes (rank 0's would otherwise wait on shards from ranks that have
        left), the other ranks writing nothing."""
        split = "test" if "test" in self.splits else "validation"
        # FSDP's flat parameters are only whole inside its wrapper; ZeRO-3 hooks the modules themselves
        model = self.trainer.model_wrapped if self.trainer.is_fsdp_enabled else self.model
        scored = self.task.score(
            model,
            self.tokenizer,
            self.splits[split],
            self.collator,
            split=split,
            batch_size=self._eval_batch(),
        )
        if not is_main_process():
            return scored.metrics
        for w in scored.metrics.get("warnings", []):
            self.console.print(f"[bold red]warning:[/] {w}")
        scored.write_predictions(self.run_dir / "predictions.csv")
        write_json(self.run_dir / "metrics.json", scored.metrics)
        self.metrics = scored.metrics
        return scored.metrics

    def write_record(self, seconds: float) -> dict[str, Any]:
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

    def close(self) -> None:
        """Leave the process group. A rank that exits with gloo's threads still connected to ranks that
        are working (rank 0 scoring) can die in std::terminate ("terminate called without an active
        exception", seen on a resumed two-node run); destroying the group first ends them in order."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def abort(self, exc: BaseException) -> None:
        """Keep what the failed run produced; close tracking with FAILED."""
        if self.mlflow is not None:
            self.mlflow.finish({}, [self.run_dir / "train_log.jsonl", self.run_dir / "status.json"], "FAILED")
