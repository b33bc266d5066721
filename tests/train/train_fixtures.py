"""A tiny BERT-like classifier and a small 3-class dataset, built on the fly (shared by train tests)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = {
    "card": ["card", "lost", "stolen", "block", "pin"],
    "fee": ["fee", "charge", "extra", "cost", "commission"],
    "tax": ["tax", "return", "refund", "year", "receipt"],
}
FILLER = ["i", "my", "the", "please", "why", "is", "was", "there", "a", "help"]


def make_data(folder: Path, n_train: int = 150, n_test: int = 45, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def rows(n: int) -> list[tuple[str, str]]:
        out = []
        for i in range(n):
            label = list(WORDS)[i % 3]
            words = rng.sample(WORDS[label], 2) + rng.sample(FILLER, rng.randint(1, 6))
            rng.shuffle(words)
            out.append((" ".join(words), label))
        return out

    paths = []
    for name, n in (("train.csv", n_train), ("test.csv", n_test)):
        p = folder / name
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows(rows(n))
        paths.append(p)
    return paths[0], paths[1]


def tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordLevel tokenizer that adds [CLS]/[SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab_text = [" ".join(v) for v in WORDS.values()] + [" ".join(FILLER)]
    tk = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tk.train_from_iterator(vocab_text, trainers.WordLevelTrainer(special_tokens=specials))
    cls_id, sep_id = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    tok.save_pretrained(folder)
    cfg = BertConfig(
        vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
        # Larger random weights than BERT's 0.02 give a random network features that differ between
        # inputs, so a few LoRA steps can separate the classes.
        initializer_range=0.3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)  # the same random "pretrained" weights in every test session
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


def experiment_yaml(
    folder: Path, model: Path, train: Path, test: Path, *, epochs: int = 8, lr: float = 2e-2, extra: str = ""
) -> Path:
    text = f"""
model:
  name_or_path: {model}
  task: seq-cls
  num_labels: 3
lora:
  config:
    task_type: SEQ_CLS
    r: 4
    lora_alpha: 8
    lora_dropout: 0.0
    target_modules: [query, key, value, dense]
data:
  train_file: {train}
  test_file: {test}
  text_field: text
  label_field: category
  max_length: 32
  class_weights: {{use_class_weights: true, alpha: 0.4}}
training_args:
  num_train_epochs: {epochs}
  learning_rate: {lr}
  per_device_train_batch_size: 8
  eval_strategy: epoch
  save_strategy: steps
  save_steps: 5
  logging_steps: 2
  seed: 7
  use_cpu: true
tracking:
  backend: none
{extra}"""
    p = folder / "exp.yaml"
    p.write_text(text, encoding="utf-8")
    return p
