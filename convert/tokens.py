"""Fewer keys for the top level's spatial self-attention: ToDo (Smith, Saxena & Saha 2024, training-free).

At 576x1024 SVD's top level attends over 72x128 = 9,216 tokens per frame, and its score/softmax/value products are
the largest float part of the INT8 UNet call (bench/results/profile_unet_xeon_int8.md). ToDo keeps every query and
takes the keys and values from every `factor`-th row and column of the token grid, so the products shrink by
factor². diffusers has no such processor and `tomesd` does not take SVD's 5-D input, so it is written here. The
approximation is measured with `svdtool validate` against the exact IR (docs/true-size.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .fold import plain_attention

KV_DOWNSAMPLE_FACTORS = (1, 2, 3, 4)


class TokenGrid:
    """The (height, width) of the tokens a transformer sees, recorded by a pre-hook on it for its processors."""

    def __init__(self) -> None:
        self.size: tuple[Any, Any] | None = None

    def record(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden_states = args[0] if args else kwargs["hidden_states"]  # [batch x frames, channels, height, width]
        self.size = (hidden_states.shape[-2], hidden_states.shape[-1])


class DownsampledKVAttnProcessor:
    """Self-attention whose keys and values come from every `factor`-th token row and column (queries: all)."""

    def __init__(self, grid: TokenGrid, factor: int):
        self.grid, self.factor = grid, factor

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        batch, _, channels = hidden_states.shape
        height, width = self.grid.size
        grid = hidden_states.transpose(1, 2).reshape(batch, channels, height, width)
        context = grid[:, :, :: self.factor, :: self.factor].flatten(2).transpose(1, 2)
        heads = attn.heads
        query, key, value = (projection(states).unflatten(-1, (heads, -1)).transpose(1, 2)
                             for projection, states in ((attn.to_q, hidden_states), (attn.to_k, context), (attn.to_v, context)))
        out = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2)
        return attn.to_out[1](attn.to_out[0](out))


def downsample_top_level_keys(unet: torch.nn.Module, factor: int) -> int:
    """Give the spatial self-attention of the UNet's top level (the first down and the last up block) ToDo's processor,
    in place; returns how many attention layers now take downsampled keys. `factor` 1 changes nothing."""
    if factor == 1:
        return 0
    changed = 0
    for block in (unet.down_blocks[0], unet.up_blocks[-1]):
        for transformer in getattr(block, "attentions", []):
            grid = TokenGrid()
            transformer.register_forward_pre_hook(grid.record, with_kwargs=True)
            for spatial in transformer.transformer_blocks:
                if not spatial.attn1.is_cross_attention and plain_attention(spatial.attn1):
                    spatial.attn1.set_processor(DownsampledKVAttnProcessor(grid, factor))
                    changed += 1
    return changed
