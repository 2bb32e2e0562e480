"""The tiny Qwen2.5-VL with favoured letters (``vqa dev make-tiny --favour-letters``, served by ``vqa dev serve-tiny``):
a random model whose next token is almost always an option letter, so a server's top logprobs contain the letters
and the server backend's logprob path answers; which letter still depends on the prompt and photo."""

from __future__ import annotations

from typing import Iterable

SEED = 0  # the value bias direction (builds are seeded: two write identical files)

NOTE = """
Favoured letters (`vqa dev make-tiny --favour-letters`, the model `vqa dev serve-tiny` serves): the last decoder
layer's value bias adds one constant direction to every position, and the output rows of the tokens {tokens}
point along it, so the next token is almost always one of them; which one still depends on the prompt and photo.
"""


# favour_letters: the option-letter tokens the favoured model's next token lands on (a-d, the usual four options;
# lower and upper case, single tokens in Qwen's vocabulary), and how strongly (see favour_letters).
FAVOURED_TOKENS = tuple("abcdABCD")
FAVOUR_BIAS = 10.0  # norm of the last layer's value bias: the constant direction against ~1-2 of input-dependent residual
FAVOUR_ALIGN = 1.5  # the letter rows' component along that direction (lifts them 5-9 logits above every other token)
FAVOUR_SPREAD = 3.0  # their random rest, scaled up so the input moves the letters' order, not only their sum


def favour_letters(model, tok, tokens: Iterable[str] = FAVOURED_TOKENS) -> list[int]:
    """Make a Qwen2.5-VL's next token favour ``tokens`` (their ids are returned), still by a real forward pass.

    Qwen2 attention has q/k/v biases. Attention weights sum to one, so a value bias ``b`` in the last decoder layer
    adds the constant ``o_proj(b)`` to the residual stream at every position; made large (``FAVOUR_BIAS``), it
    dominates the final RMSNorm's output, which then points mostly along ``u = normalize(norm.weight * o_proj(b))``.
    Each favoured token's output row becomes ``FAVOUR_ALIGN * u`` plus ``FAVOUR_SPREAD`` times its own random row
    with the ``u`` component removed: the ``u`` part lifts all of them well above the other 151k tokens, the random
    part, meeting the input-dependent rest of the hidden state, orders them differently for each prompt and photo.
    ``b`` is the same for every key/value head, so ``o_proj(b)`` does not depend on how query heads share them.
    The output layer must not be tied to the input embedding (else the letters' input vectors would change too).
    """
    import torch

    if model.config.tie_word_embeddings:
        raise ValueError("favour_letters needs an untied output layer (tie_word_embeddings=False)")
    ids = [tok.convert_tokens_to_ids(t) for t in tokens]
    if any(i is None or i == tok.unk_token_id for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"expected {list(tokens)} to be distinct single tokens, found ids {ids}")
    text = model.model.language_model
    attn = text.layers[-1].self_attn
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        head = torch.randn(attn.head_dim, generator=gen)
        bias = head.repeat(attn.v_proj.bias.numel() // attn.head_dim)
        attn.v_proj.bias.copy_(bias * (FAVOUR_BIAS / bias.norm()))
        constant = attn.o_proj.weight @ attn.v_proj.bias.repeat(attn.num_key_value_groups)
        u = text.norm.weight * constant
        u = u / u.norm()
        rows = model.lm_head.weight
        for i in ids:
            rest = rows[i] - (rows[i] @ u) * u
            rows[i] = FAVOUR_ALIGN * u + FAVOUR_SPREAD * rest
    return ids


def note() -> str:
    """The paragraph the favoured model's README.md adds."""
    return NOTE.format(tokens=", ".join(f"`{t}`" for t in FAVOURED_TOKENS))
