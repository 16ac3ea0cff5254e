"""body: whether it can run the masking, and its resolved shape. One check per body kind, in BODY_CHECKS."""
from __future__ import annotations

from typing import Any, Callable

from specc import spec as S
from specc.check.context import Context
from specc.plan import BodyPlan, InputsPlan, MaskingPlan

NEEDS = {"causal": "causal", "mlm": "bidirectional", "rtd": "bidirectional", "plm": "plm", "none": "bidirectional"}
HINTS = {"causal": "use native, gpt2, xlnet, bert, roberta, albert, electra, llama, gru or mlp",
         "bidirectional": "use native, xlnet, bert, roberta, albert or electra",
         "plm": "plm runs on native or xlnet"}


def resolve_body(ctx: Context, inputs: InputsPlan | None, masking: MaskingPlan) -> BodyPlan | None:
    causal = _attention(ctx, masking)
    if causal is None:
        return None
    return BODY_CHECKS[type(ctx.spec.body)](ctx, ctx.spec.body, inputs, causal)


def _attention(ctx: Context, masking: MaskingPlan) -> bool | None:
    """Whether the body runs causally for this masking, or None (reported) when it cannot run it at all."""
    from specc.nn.bodies import capabilities
    body = ctx.spec.body
    name = body.architecture if body.kind == "transformer" else body.kind
    try:
        caps = capabilities(body.kind, getattr(body, "architecture", None))
    except ValueError as exc:
        ctx.error("$.body.architecture", "unknown_architecture", str(exc), getattr(exc, "hint", None))
        return None
    if not caps:
        ctx.error("$.body.architecture", "unsupported_architecture",
                  f"{name} is neither a decoder nor an encoder language model in transformers "
                  "(encoder-decoder models cannot run on a single sequence of embeddings)",
                  "use a decoder (e.g. hf:mistral) or an encoder (e.g. hf:distilbert)")
        return None
    need = NEEDS[masking.kind]
    if masking.kind == "none" and "bidirectional" not in caps:
        need = "causal"
    if need not in caps:
        ctx.error("$.masking", "masking_mismatch", f"masking {masking.kind!r} needs a {need} body; "
                  f"{name} supports {', '.join(sorted(caps))}", HINTS[need])
        return None
    return need == "causal"


def _mlp(ctx: Context, body: S.MlpBody, inputs: InputsPlan | None, causal: bool) -> BodyPlan:
    width = inputs.output_width if inputs else 0
    return BodyPlan("mlp", None, width, body.dims[-1], True, dims=tuple(body.dims), activation=body.activation,
                    dropout=body.dropout)


def _gru(ctx: Context, body: S.GruBody, inputs: InputsPlan | None, causal: bool) -> BodyPlan:
    return BodyPlan("gru", None, body.d_model, body.d_model, True, n_layer=body.n_layer, dropout=body.dropout)


def _transformer(ctx: Context, body: S.TransformerBody, inputs: InputsPlan | None, causal: bool) -> BodyPlan | None:
    if body.d_model % body.n_head:
        ctx.error("$.body.n_head", "shape_mismatch", f"d_model {body.d_model} is not divisible by n_head {body.n_head}",
                  "pick n_head dividing d_model, e.g. " + ", ".join(
                      str(h) for h in range(1, min(body.d_model, 32) + 1) if body.d_model % h == 0))
        return None
    d_ff = body.d_ff or 4 * body.d_model
    max_len = ctx.spec.inputs.max_sequence_length
    config: dict[str, Any] = {}
    if body.architecture != "native":
        config = _hf_config(ctx, body, causal, d_ff)
        if config is None:
            return None
    elif body.config:
        ctx.error("$.body.config", "unknown_key", "the native body takes no config overrides",
                  "use d_ff, dropout, n_head and n_layer")
    return BodyPlan("transformer", body.architecture, body.d_model, body.d_model, causal, n_head=body.n_head,
                    n_layer=body.n_layer, d_ff=d_ff, dropout=body.dropout, max_positions=max_len, config=config)


def _hf_config(ctx: Context, body: S.TransformerBody, causal: bool, d_ff: int) -> dict[str, Any] | None:
    """The resolved Hugging Face config, tried once on a tiny batch (unless ctx.trial_run is off); None if bad."""
    from specc.nn.hf import check_runs, resolve_config
    from specc.nn.xlnet import runs_natively
    max_len = ctx.spec.inputs.max_sequence_length
    try:
        config = resolve_config(body.architecture, d_model=body.d_model, n_head=body.n_head, n_layer=body.n_layer,
                                d_ff=d_ff, dropout=body.dropout, max_positions=max_len, causal=causal,
                                overrides=body.config)
    except Exception as exc:   # noqa: BLE001 - transformers' config classes raise anything
        ctx.error("$.body.config", "invalid_body_config", str(exc).strip().splitlines()[0][:300],
                  getattr(exc, "hint", None))
        return None
    try:
        if ctx.trial_run and not runs_natively(body.architecture, config):
            check_runs(config, causal, body.d_model, max_len, body.n_layer, d_ff)
    except ValueError as exc:
        ctx.error("$.body.architecture", "unsupported_architecture", str(exc),
                  "use one of the listed architectures, or change body.config")
        return None
    except Exception as exc:   # noqa: BLE001 - a config value the model class cannot build with
        ctx.error("$.body.config", "invalid_body_config",
                  f"{type(exc).__name__}: {str(exc).strip()[:300]} (building {body.architecture})",
                  "check the body.config values against the Hugging Face config class")
        return None
    return config


BodyCheck = Callable[[Context, Any, "InputsPlan | None", bool], "BodyPlan | None"]
BODY_CHECKS: dict[type, BodyCheck] = {S.TransformerBody: _transformer, S.GruBody: _gru, S.MlpBody: _mlp}
