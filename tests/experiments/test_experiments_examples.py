"""The shipped study examples load as studies: seed 003's six models (each run's experiment valid for
its own model family) with the baseline row scored by the same metrics as `evaluate --predictions`."""

from __future__ import annotations

from pathlib import Path

from loralab.evaluate.predictions_file import score_predictions
from loralab.experiments.spec import load_study_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_seed003_study_has_the_six_models_and_the_baseline() -> None:
    spec = load_study_file(EXAMPLES / "seed003-study" / "study.yaml")
    models = {r.name: r.overrides.get("model.name_or_path", "gogamza/kobart-base-v2") for r in spec.runs}
    assert models == {
        "kobart": "gogamza/kobart-base-v2",
        "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
        "qwen3-4b-instruct": "Qwen/Qwen3-4B-Instruct-2507",
        "solar-10.7b": "upstage/SOLAR-10.7B-v1.0",
        "polyglot-ko-12.8b": "EleutherAI/polyglot-ko-12.8b",
        "kullm-v2": "nlpai-lab/kullm-polyglot-12.8b-v2",
    }
    (baseline,) = spec.baselines
    assert baseline.predictions.is_file() and baseline.task == "generation"
    # The study scores the baseline through the same function as `loralab evaluate --predictions`.
    metrics = score_predictions(baseline.predictions, task="generation")
    assert 0.0 < metrics["rouge1"] < 1.0


def test_seed000_study_is_an_ablation_in_three_phases() -> None:
    spec = load_study_file(EXAMPLES / "seed000-study" / "study.yaml")
    assert spec.kind == "ablate"
    assert [r.phase for r in spec.runs] == ["attention", "attention+mlp-in", "all-linear"]
