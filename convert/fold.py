"""Exact simplifications of SVD's UNet before tracing.

SVD's cross-attention (`attn2` of every spatial and temporal transformer block) attends to one key: the CLIP image
embedding. Softmax over one key is 1, so `attn2(x, context) = to_out(to_v(context))` for every query token: `to_q`,
`to_k`, the score, softmax and value products and the per-token `to_out` are work whose result is known. Folding
them leaves a [rows, 1, C] tensor that the block's residual addition broadcasts over the tokens (both diffusers blocks
add it directly: `hidden_states = attn_output + hidden_states`). diffusers has no processor for this case (its
processors are general), so it is written here.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import Attention

CROSS_ATTENTION_MODES = ("folded", "full")


class SingleKeyCrossAttnProcessor:
    """`to_out(to_v(context))`, once per context row; the standard processor's result when context has one token."""

    def __init__(self, fallback: Any):
        self.fallback = fallback  # the module's own processor, for a context of more than one token

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1 or attention_mask is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        value = attn.to_v(encoder_hidden_states)
        return attn.to_out[1](attn.to_out[0](value))  # dropout (to_out[1]) is the identity in eval


def plain_attention(attn: Attention) -> bool:
    """Nothing around the projections that a processor replacing the standard one would skip: no spatial or group
    norm, no residual connection or output rescaling, `to_out` = linear + dropout."""
    return (attn.spatial_norm is None and attn.group_norm is None and not attn.residual_connection
            and attn.rescale_output_factor == 1.0 and len(attn.to_out) == 2)


def foldable(attn: Attention) -> bool:
    """A plain cross-attention whose context goes into its projections as it is."""
    return attn.is_cross_attention and attn.norm_cross is None and plain_attention(attn)


def fold_cross_attention(unet: torch.nn.Module) -> int:
    """Give every foldable `attn2` of `unet` the single-key processor (in place); returns how many were folded."""
    folded = 0
    for name, module in unet.named_modules():
        if name.endswith("attn2") and isinstance(module, Attention) and foldable(module):
            module.set_processor(SingleKeyCrossAttnProcessor(module.processor))
            folded += 1
    return folded
