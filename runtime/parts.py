"""OpenVINO parts for the SVD components optimum-intel has no class for.

optimum-intel's `OVModelUnet` / `OVModelVaeDecoder` speak Stable Diffusion's interfaces; SVD's UNet takes
`added_time_ids` and a 5-D sample, its temporal VAE decoder takes `num_frames`, and its CLIP image encoder is
an OV model rather than a torch module. These subclasses give diffusers' `StableVideoDiffusionPipeline.__call__`
exactly the attributes it reads, and nothing more.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import openvino as ov
import torch
from diffusers.utils import BaseOutput
from optimum.intel.openvino.modeling_diffusion import OVModelUnet, OVModelVae, OVModelVaeDecoder, OVPipelinePart
from transformers.modeling_outputs import ModelOutput

from svdtool.memory import drop_mapped_files

OV_XML = "openvino_model.xml"  # each part's IR file in its folder (optimum-intel's layout)


def release_memory(part: OVPipelinePart) -> None:
    """Hand a compiled part's working memory (activations, scratch) and its IR file's mapped pages back to the
    system; its weights stay compiled and the next call allocates again. Used between stages: the UNet's buffers are
    not needed while decoding."""
    if isinstance(part.request, ov.CompiledModel):  # not a recorder standing in for it (quantize/record.py)
        part.request.release_memory()
    drop_source_pages(part)
    deepcache = getattr(part, "deepcache", None)
    if deepcache is not None:
        deepcache.release_memory()


def drop_source_pages(part: OVPipelinePart) -> None:
    """The IR file's pages out of memory once the compiled part has run (svdtool.memory.drop_mapped_files)."""
    if part.model_save_dir is not None:
        drop_mapped_files(part.model_save_dir)


class OVImageEncoder(OVPipelinePart):
    """CLIP vision tower with projection: pixel_values → `.image_embeds`."""

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> ModelOutput:
        self.compile()
        image_embeds = torch.from_numpy(self.request({"pixel_values": pixel_values}, share_inputs=True)[0])
        return ModelOutput(image_embeds=image_embeds)

    def parameters(self) -> Iterator[torch.Tensor]:
        # diffusers reads the encoder's dtype as `next(image_encoder.parameters()).dtype`; OV runs in f32 I/O.
        yield torch.zeros((), dtype=self.dtype)


class OVSpatioTemporalUnet(OVModelUnet):
    """UNetSpatioTemporalConditionModel: (sample, timestep, encoder_hidden_states, added_time_ids) → noise_pred."""

    @property
    def add_embedding(self) -> SimpleNamespace:
        # diffusers checks `unet.add_embedding.linear_1.in_features` against the added-time-ids width.
        return SimpleNamespace(linear_1=SimpleNamespace(in_features=self.config.projection_class_embeddings_input_dim))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        inputs = {
            "sample": sample,
            "timestep": torch.as_tensor(timestep, dtype=torch.float32).reshape(()),
            "encoder_hidden_states": encoder_hidden_states,
            "added_time_ids": added_time_ids,
        }
        deepcache = getattr(self, "deepcache", None)
        if deepcache is not None:  # full or shallow UNet for this step (runtime/deepcache.py)
            scheduler = self.parent_pipeline.scheduler
            step = scheduler.step_index or 0  # diffusers' scale_model_input has set it for this step
            if step == 0:  # a new video
                deepcache.start(len(scheduler.timesteps))
            return (torch.from_numpy(deepcache(inputs, step)),)
        self.compile()
        if self.parent_pipeline.guidance_in_turn and sample.shape[0] > 1:
            halves = ({name: value if name == "timestep" else value[i:i + 1] for name, value in inputs.items()}
                      for i in range(sample.shape[0]))
            noise_pred = torch.cat([torch.from_numpy(self.request(half, share_inputs=True)[0]) for half in halves])
        else:
            noise_pred = torch.from_numpy(self.request(inputs, share_inputs=True)[0])
        if getattr(self, "first_call_of", None) is not self.request:  # the first call of this compiled UNet: its weights
            self.first_call_of = self.request  # are converted by now (at dynamic shapes, here), and its stage is the longest
            drop_source_pages(self)
        return (noise_pred,)


class OVTemporalVaeDecoder(OVModelVaeDecoder):
    """AutoencoderKLTemporalDecoder.decode: one chunk of `num_frames` latents → `.sample` frames."""

    def forward(self, latent_sample: torch.Tensor, num_frames: int | None = None, return_dict: bool = True) -> BaseOutput:
        if num_frames is not None and num_frames != latent_sample.shape[0]:
            raise ValueError(f"num_frames={num_frames} must equal the chunk's frame count {latent_sample.shape[0]}")
        self.compile()
        sample = torch.from_numpy(self.request({"latent_sample": latent_sample}, share_inputs=True)[0])
        return ModelOutput(sample=sample)


class OVTemporalVae(OVModelVae):
    """VAE facade: diffusers inspects `vae.forward` for a `num_frames` argument before decoding in chunks."""

    def forward(self, sample: torch.Tensor, num_frames: int = 1) -> BaseOutput:
        return self.decode(self.encode(sample).latent_dist.mode(), num_frames=num_frames)
