"""Hugging Face transformer bodies: config resolution (at compile time) and the module (at build time)."""
from __future__ import annotations

import functools
import json
from typing import Any

import torch
from torch import nn

from specc.errors import did_you_mean

# our arguments -> each architecture's config keys
_KEYS = {
    "gpt2": dict(d_model="n_embd", n_head="n_head", n_layer="n_layer", d_ff="n_inner", max_positions="n_positions",
                 dropout=("resid_pdrop", "embd_pdrop", "attn_pdrop")),
    "xlnet": dict(d_model="d_model", n_head="n_head", n_layer="n_layer", d_ff="d_inner", dropout=("dropout",)),
    "llama": dict(d_model="hidden_size", n_head=("num_attention_heads", "num_key_value_heads"),
                  n_layer="num_hidden_layers", d_ff="intermediate_size", max_positions="max_position_embeddings",
                  dropout=("attention_dropout",)),
}
_BERT_LIKE = dict(d_model=("hidden_size", "embedding_size"), n_head="num_attention_heads",
                  n_layer="num_hidden_layers", d_ff="intermediate_size", max_positions="max_position_embeddings",
                  dropout=("hidden_dropout_prob", "attention_probs_dropout_prob"))
for _arch in ("bert", "roberta", "albert", "electra"):
    _KEYS[_arch] = _BERT_LIKE
_KEYS["distilbert"] = dict(d_model="dim", n_head="n_heads", n_layer="n_layers", d_ff="hidden_dim",
                          max_positions="max_position_embeddings", dropout=("dropout", "attention_dropout"))
_GENERIC = dict(d_model="hidden_size", n_head=("num_attention_heads", "num_key_value_heads"),
                n_layer="num_hidden_layers", d_ff=("intermediate_size", "ffn_dim", "n_inner"),   # OPT, GPT-J, ...
                max_positions="max_position_embeddings",
                dropout=("attention_dropout", "hidden_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob"))
# encoders that become causal with is_decoder=True; decoder-only models are causal already
_DECODER_CAPABLE = {"bert", "roberta", "electra"}
# encoders without a decoder mode that take a [B, 1, L, L] attention mask: made causal with a lower-triangular one
_MASK_CAUSAL = {"albert"}
# models whose causal attention is a config switch of their own
_CAUSAL_SWITCH = {"xlm": {"causal": True}, "bert-generation": {"is_decoder": True}}


def model_type(architecture: str) -> str:
    return architecture[3:] if architecture.startswith("hf:") else architecture


def capabilities(architecture: str) -> set[str]:
    mt = model_type(architecture)
    if mt == "xlnet":
        return {"causal", "bidirectional", "plm"}
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    if mt not in CONFIG_MAPPING:
        err = ValueError(f"unknown Hugging Face model type {mt!r}")
        err.hint = did_you_mean(mt, list(CONFIG_MAPPING.keys()))
        raise err
    if getattr(CONFIG_MAPPING[mt](), "is_encoder_decoder", False):
        return set()   # needs decoder inputs besides the sequence
    caps = set()
    if mt in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        caps.add("bidirectional")
        if mt in _DECODER_CAPABLE | _MASK_CAUSAL or (architecture.startswith("hf:")
                                                      and mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
            caps.add("causal")
    elif mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        caps.add("causal")
    return caps


def resolve_config(architecture: str, *, d_model: int, n_head: int, n_layer: int, d_ff: int, dropout: float,
                   max_positions: int, causal: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """The full set of config keys for the body, JSON-serialisable; ValueError (with .hint) when overrides are bad."""
    mt = model_type(architecture)
    if architecture == "xlnet" and not overrides:   # specc's own XLNet module: nothing to check against transformers
        from specc.nn.xlnet import default_config
        return default_config(d_model, n_head, n_layer, d_ff, dropout)
    from transformers import AutoConfig
    keys = _KEYS.get(mt, _GENERIC)
    defaults = AutoConfig.for_model(mt)
    ours = dict(d_model=d_model, n_head=n_head, n_layer=n_layer, d_ff=d_ff, dropout=dropout,
                max_positions=max_positions + 2)   # +2: RoBERTa's positions start after its padding index
    config: dict[str, Any] = {}
    for arg, names in keys.items():
        for name in (names,) if isinstance(names, str) else names:
            if hasattr(defaults, name):
                config[name] = ours[arg]
    # the body reads inputs_embeds: a tiny vocabulary and no special tokens
    for name, value in (("vocab_size", 2), ("pad_token_id", 0), ("bos_token_id", None), ("eos_token_id", None),
                        ("use_cache", False)):
        if hasattr(defaults, name):
            config[name] = value
    head_width = d_model // max(n_head, 1)
    if (getattr(defaults, "rotary_dim", None) or 0) > head_width:   # GPT-J, CodeGen: rotate at most the whole head
        config["rotary_dim"] = head_width
    if hasattr(defaults, "attention_types"):   # GPT-Neo: one attention kind per layer, alternating as by default
        config["attention_types"] = [[["global", "local"], n_layer // 2]] + ([[["global"], 1]] if n_layer % 2 else [])
    if mt == "xlnet":
        config.update(attn_type="bi", mem_len=None)   # causality comes from perm_mask (see HFTransformer)
    elif causal and mt in _CAUSAL_SWITCH:
        config.update(_CAUSAL_SWITCH[mt])
    elif causal and mt in _DECODER_CAPABLE | ({mt} if architecture.startswith("hf:") else set()) and \
            "bidirectional" in capabilities(architecture):
        config["is_decoder"] = True
    unknown = [k for k in overrides if not hasattr(defaults, k)]
    if unknown:
        err = ValueError(f"{mt} configs have no key(s) {', '.join(map(repr, unknown))}")
        err.hint = did_you_mean(unknown[0], [k for k in defaults.to_dict() if not k.startswith("_")])
        raise err
    config.update(overrides)
    if mt == "xlnet" and (config["attn_type"] != "bi" or config.get("bi_data")):
        raise ValueError("attn_type and bi_data are specc's to set on XLNet: the masking decides what each position "
                         "sees (causal masking makes it causal), and bi_data would split every batch in two halves")
    built = AutoConfig.for_model(mt, **config)
    width = getattr(built, "hidden_size", None)
    if width is not None and width != d_model:
        raise ValueError(f"config sets the hidden size to {width} but body.d_model is {d_model}")
    return {"model_type": mt, **config}


def _instantiate(config: dict[str, Any], device: str | None = None) -> nn.Module:
    import logging
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cfg = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    model_class = MODEL_MAPPING[type(cfg)]   # resolved (and imported) before any device context
    with torch.device(device or "cpu"):
        model = model_class(cfg)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None   # sequence outputs only
    return model


def check_runs(config: dict[str, Any], causal: bool, d_model: int, max_length: int, n_layer: int, d_ff: int) -> None:
    """Run a one-layer copy of the body on a batch of full-length sequences; ValueError saying why when it cannot
    run here (an encoder-decoder, rotary sizes that do not fit the head size, too few positions, sub-models that
    keep their default sizes, ...)."""
    # a transformer of these sizes has about n_layer * (4 d^2 + 2 d d_ff) weights; far more means the config
    # builds parts that specc's sizes do not reach (and building them for real would take minutes and gigabytes)
    nominal = n_layer * (4 * d_model * d_model + 2 * d_model * d_ff) + max_length * d_model
    built = count_parameters(config)
    if built > 20 * nominal + 1_000_000:
        raise ValueError(f"{config['model_type']} builds {built:,} parameters for a body of d_model {d_model} and "
                         f"{n_layer} layer(s) (about {nominal:,} expected): parts of its config keep their default "
                         "sizes; set them in body.config")
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(config.get(key), int) and config[key] < max_length:
            raise ValueError(f"{config['model_type']} has {key}={config[key]}, fewer positions than "
                             f"max_sequence_length {max_length}")
    # one layer is enough to see whether it runs (and leaks); GPT-Neo lists a kind per layer, so it keeps them all
    layers = {k: 1 for k in ("num_hidden_layers", "n_layer") if k in config and "attention_types" not in config}
    L = min(max_length, 1024)   # longer sequences only cost time here; the positions were checked above
    try:
        body = HFTransformer({**config, **layers}, causal).eval()
        x = torch.randn(2, L, d_model)
        valid = torch.ones(2, L, dtype=torch.bool)
        valid[1, L // 2 + 1:] = False
        with torch.no_grad():
            out = body(x, valid)
            if tuple(out.shape) != (2, L, d_model):
                raise ValueError(f"it returns shape {list(out.shape)} for inputs of shape {list(x.shape)}")
            # causal means causal: positions before L/2 must not change when later ones do
            later = torch.cat([x[:, :L // 2], torch.randn(2, L - L // 2, d_model)], dim=1)
            seen = (body(later, valid)[:, :L // 2] - out[:, :L // 2]).abs().max().item() if causal and L > 1 else 0
    except Exception as exc:   # noqa: BLE001 - any failure of a third-party model is reported as data
        message = " ".join(str(exc).split())[:300]
        raise ValueError(f"{config['model_type']} cannot run on a sequence of embeddings with this body "
                         f"({type(exc).__name__}: {message})") from None
    if seen > 1e-4:
        raise ValueError(f"{config['model_type']} lets positions see later ones under this config (outputs "
                         f"changed by {seen:.2g} when only later inputs changed), so it cannot serve causal masking; "
                         "set the model's own causal switch in body.config, or use a bidirectional masking")


def count_parameters(config: dict[str, Any]) -> int:
    # compiling asks twice (the size check of the trial run, then the plan's count): build on meta once
    return _count_parameters(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _count_parameters(config_json: str) -> int:
    return sum(p.numel() for p in _instantiate(json.loads(config_json), "meta").parameters())


class HFTransformer(nn.Module):
    """A Hugging Face base model over `inputs_embeds` [B, L, d] -> [B, L, d]."""

    def __init__(self, config: dict[str, Any], causal: bool):
        super().__init__()
        self.model = _instantiate(config)
        self.is_xlnet = config["model_type"] == "xlnet"
        self.causal = causal
        self.causal_by_mask = causal and config["model_type"] in _MASK_CAUSAL

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        if self.is_xlnet:
            # XLNet's perm_mask[b, i, j] = 1 means i may not attend to j; it expresses causality and PLM orders.
            if attention is None and self.causal:
                attention = _lower_triangle(x).expand(x.shape[0], -1, -1)
            perm = None if attention is None else (~attention).to(x.dtype)
            return self.model(inputs_embeds=x, attention_mask=valid.to(x.dtype), perm_mask=perm).last_hidden_state
        if attention is not None:
            raise ValueError("only native and xlnet bodies take a custom attention pattern")
        if self.causal_by_mask:
            return self.model(inputs_embeds=x, attention_mask=(_lower_triangle(x)[None] & valid[:, None, :])[:, None]
                              ).last_hidden_state
        return self.model(inputs_embeds=x, attention_mask=valid.long()).last_hidden_state


def _lower_triangle(x: torch.Tensor) -> torch.Tensor:
    """[L, L] bool: position i may see positions j <= i (L = x.shape[1])."""
    L = x.shape[1]
    return torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
