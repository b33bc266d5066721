"""Reload a finished run (its base model, adapter and tokenizer) and score it: `loralab evaluate RUN_DIR`.

It sits above `train` because it uses training's task strategies to read, tokenise and score, so the
numbers of `train` and `evaluate RUN_DIR` agree by construction.
"""

from loralab.predict.run import evaluate_run, load_run_model

__all__ = ["evaluate_run", "load_run_model"]
