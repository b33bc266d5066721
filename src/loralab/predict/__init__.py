"""Reload a finished run (its base model, adapter and tokenizer) and score it: `loralab evaluate RUN_DIR`.

It sits above `train` because it uses training's task strategies to read, tokenise and score, so the
numbers of `train` and `evaluate RUN_DIR` agree by construction. `files` checks a run directory without
the heavy libraries; `run` loads the model (import it only to evaluate).
"""
