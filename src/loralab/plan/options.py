"""The option table of seed 000 §2.2: the same rank and layers on attention only, attention plus the
MLP's input projections, and every linear layer of the blocks, for any architecture.

Names come from the architecture's own modules. Where one name covers two kinds (GPT-2's `c_proj`
is both the attention output and the MLP down projection) the option uses a longer suffix such as
`attn.c_proj`, which PEFT matches with `key.endswith("." + name)` exactly like a short one.
"""

from __future__ import annotations

from loralab.arch.records import ArchRecord, ModuleRecord


def _block_linears(arch: ArchRecord) -> list[ModuleRecord]:
    return [m for m in arch.modules if m.linear and m.layer is not None and m.kind in ("attention", "mlp")]


def distinct_names(arch: ArchRecord) -> dict[str, tuple[str, ModuleRecord]]:
    """Shortest trailing name of each block linear module that identifies its kind unambiguously.

    Returns {name: (kind, an example module)} in model order.
    """
    mods = _block_linears(arch)
    linears = [m for m in arch.modules if m.linear]
    out: dict[str, tuple[str, ModuleRecord]] = {}
    for m in mods:
        name = _exclusive_suffix(m, linears)
        out.setdefault(name, (m.kind, m))
    return out


def _matches(suffix: str, module: str) -> bool:
    # PEFT's rule for a plain string in target_modules: the whole name, or a suffix after a dot.
    return module == suffix or module.endswith("." + suffix)


def _exclusive_suffix(m: ModuleRecord, linears: list[ModuleRecord]) -> str:
    """The shortest trailing name of `m` that matches only modules of m's kind; without one (BERT's MLP
    `output.dense` also matches `attention.output.dense`), the longest trailing name before the layer
    index, which over-matches only into other kinds' modules that the option includes anyway."""
    parts = m.name.split(".")
    suffix = parts[-1]
    for i in range(len(parts) - 1, 0, -1):
        suffix = ".".join(parts[i:])
        if all(o.kind == m.kind for o in linears if _matches(suffix, o.name)):
            return suffix
        if parts[i - 1].isdigit():  # the layer index: longer names would pin one layer
            break
    return suffix


def option_sets(arch: ArchRecord) -> list[tuple[str, list[str]]]:
    names = distinct_names(arch)
    attn = [n for n, (k, _) in names.items() if k == "attention"]
    mlp = [n for n, (k, _) in names.items() if k == "mlp"]
    # The MLP's input projections widen the hidden state (gate/up, c_fc, fc1, intermediate.dense).
    mlp_in = [n for n in mlp if (names[n][1].out_features or 0) > (names[n][1].in_features or 0)]
    rows: list[tuple[str, list[str]]] = []
    if attn:
        rows.append(("attention only", attn))
    if attn and mlp_in and len(mlp_in) < len(mlp):
        rows.append(("attention + MLP in (" + ", ".join(mlp_in) + ")", attn + mlp_in))
    if mlp:
        rows.append(("all linear (attention + MLP)", attn + mlp))
    return rows
