"""DeepCache for SVD's UNet: a full UNet that also returns the feature of skip branch K, and a shallow UNet that runs
only the blocks above it (Ma et al., "DeepCache: Accelerating Diffusion Models for Free", 2023).

The UNet is `conv_in → down_blocks[0..n-1] → mid → up_blocks[0..n-1] → conv_out`, and up block j reads the skip
features of down block n-1-j. Branch K is the K-th level from the top: the full UNet also returns what enters
`up_blocks[n-1-K]` (the deep path's result at level K); the shallow UNet recomputes `conv_in`, `down_blocks[0..K]`
(the last one without its downsampler, whose output only deeper blocks read) and `up_blocks[n-1-K..n-1]`, taking
the deep path's result from the cache. Branch 0 is the cheapest shallow UNet, deeper branches recompute more.

Written by hand: diffusers' `UNetSpatioTemporalConditionModel.forward` has no way to stop at or resume from a
branch, so both wrappers follow its steps, calling its own blocks; the full path's output is the UNet's own.
"""

from __future__ import annotations

import torch
from torch import nn

def feature_channels(unet_config: dict, branch: int) -> int:
    """Channels of branch K's cached feature: the output of up_blocks[n-2-K], whose width is block_out_channels[K+1]."""
    return unet_config["block_out_channels"][branch + 1]


def _embed(unet: nn.Module, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
           added_time_ids: torch.Tensor) -> tuple:
    """Steps 1-2 of diffusers' forward: time and added-time embeddings, frames folded into the batch, conv_in."""
    batch_size, num_frames = sample.shape[:2]
    timesteps = timestep.reshape(1).expand(batch_size)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
    time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((batch_size, -1)).to(emb.dtype)
    emb = (emb + unet.add_embedding(time_embeds)).repeat_interleave(num_frames, dim=0)
    encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
    hidden = unet.conv_in(sample.flatten(0, 1))
    image_only_indicator = torch.zeros(batch_size, num_frames, dtype=hidden.dtype, device=hidden.device)
    return hidden, emb, encoder_hidden_states, image_only_indicator, batch_size, num_frames


def _down(block: nn.Module, hidden: torch.Tensor, emb, encoder_hidden_states, image_only_indicator, downsample: bool):
    """One down block; without `downsample`, its resnets (and attentions) only."""
    if downsample:
        if getattr(block, "has_cross_attention", False):
            return block(hidden_states=hidden, temb=emb, encoder_hidden_states=encoder_hidden_states,
                         image_only_indicator=image_only_indicator)
        return block(hidden_states=hidden, temb=emb, image_only_indicator=image_only_indicator)
    outputs = ()
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for resnet, attention in zip(block.resnets, attentions):
        hidden = resnet(hidden, emb, image_only_indicator=image_only_indicator)
        if attention is not None:
            hidden = attention(hidden, encoder_hidden_states=encoder_hidden_states,
                               image_only_indicator=image_only_indicator, return_dict=False)[0]
        outputs += (hidden,)
    return hidden, outputs


def _up(block: nn.Module, hidden: torch.Tensor, skips: tuple, emb, encoder_hidden_states, image_only_indicator):
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=skips, encoder_hidden_states=encoder_hidden_states,
                     image_only_indicator=image_only_indicator)
    return block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=skips, image_only_indicator=image_only_indicator)


def _out(unet: nn.Module, hidden: torch.Tensor, batch_size: int, num_frames: int) -> torch.Tensor:
    hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
    return hidden.reshape(batch_size, num_frames, *hidden.shape[1:])


class DeepCacheFullWrapper(nn.Module):
    """The UNet's inputs → (its output, the feature entering up_blocks[n-1-K])."""

    def __init__(self, unet: nn.Module, branch: int):
        super().__init__()
        self.unet, self.branch = unet, branch

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids) -> tuple[torch.Tensor, torch.Tensor]:
        unet = self.unet
        hidden, emb, context, indicator, batch_size, num_frames = _embed(unet, sample, timestep, encoder_hidden_states, added_time_ids)
        skips = (hidden,)
        for block in unet.down_blocks:
            hidden, outputs = _down(block, hidden, emb, context, indicator, downsample=True)
            skips += outputs
        hidden = unet.mid_block(hidden_states=hidden, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        for index, block in enumerate(unet.up_blocks):
            if index == len(unet.up_blocks) - 1 - self.branch:
                cached = hidden
            count = len(block.resnets)
            hidden = _up(block, hidden, skips[-count:], emb, context, indicator)
            skips = skips[:-count]
        return _out(unet, hidden, batch_size, num_frames), cached


class DeepCacheShallowWrapper(nn.Module):
    """The UNet's inputs and branch K's cached feature → the UNet's output, recomputing only levels 0..K."""

    def __init__(self, unet: nn.Module, branch: int):
        super().__init__()
        self.unet, self.branch = unet, branch

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, cached_feature) -> torch.Tensor:
        unet = self.unet
        hidden, emb, context, indicator, batch_size, num_frames = _embed(unet, sample, timestep, encoder_hidden_states, added_time_ids)
        skips = (hidden,)
        for index in range(self.branch + 1):
            hidden, outputs = _down(unet.down_blocks[index], hidden, emb, context, indicator, downsample=index < self.branch)
            skips += outputs
        hidden = cached_feature
        for block in unet.up_blocks[len(unet.up_blocks) - 1 - self.branch:]:
            count = len(block.resnets)
            hidden = _up(block, hidden, skips[-count:], emb, context, indicator)
            skips = skips[:-count]
        return _out(unet, hidden, batch_size, num_frames)
