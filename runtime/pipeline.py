"""`OVStableVideoDiffusionPipeline`: OpenVINO parts under diffusers' own `StableVideoDiffusionPipeline.__call__`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import openvino as ov
from diffusers import StableVideoDiffusionPipeline
from huggingface_hub import snapshot_download
from optimum.intel.openvino.modeling_diffusion import OVDiffusionPipeline

from svdtool import logs

from .deepcache import DeepCacheRunner, DeepCacheSettings, check_available
from .parts import OV_XML, drop_source_pages, release_memory, OVImageEncoder, OVSpatioTemporalUnet, OVTemporalVae, OVTemporalVaeDecoder

logs.adopt("optimum", "nncf", "torch")  # optimum-intel imports nncf, which imports torch's extension loader

IMAGE_ENCODER = "image_encoder"


class OVStableVideoDiffusionPipeline(OVDiffusionPipeline, StableVideoDiffusionPipeline):
    """Stable Video Diffusion on OpenVINO, the optimum-intel way (like `OVLTXImageToVideoPipeline`).

    Load with `from_pretrained(dir_or_hub_id, device="CPU", ov_config=...)`; `reshape`, `compile`, `to`,
    `save_pretrained` and `ov_config={"CACHE_DIR": ...}` behave as in optimum-intel. `__call__` is diffusers'.
    """

    main_input_name = "image"
    export_feature = "image-to-video"
    auto_model_class = StableVideoDiffusionPipeline

    def __init__(self, *args: Any, image_encoder: ov.Model | None = None, **kwargs: Any):
        compile_now = kwargs.pop("compile", True)
        super().__init__(*args, compile=False, **kwargs)
        # optimum-intel creates SD-flavoured parts; give them SVD's interfaces (see parts.py for why).
        self.unet.__class__ = OVSpatioTemporalUnet
        self.vae_decoder.__class__ = OVTemporalVaeDecoder
        self.vae.__class__ = OVTemporalVae
        if image_encoder is None:
            raise ValueError("OVStableVideoDiffusionPipeline needs the image_encoder IR")
        self.image_encoder = OVImageEncoder(image_encoder, self, IMAGE_ENCODER)
        self.register_modules(image_encoder=self.image_encoder)
        self._fitted: tuple | None = None  # the setting `fit` shaped a dynamic IR for
        self.guidance_in_turn = False  # run the UNet's two guidance halves one after the other (less memory, see fit)
        if self.is_dynamic:
            self.reshape(batch_size=-1, height=-1, width=-1, num_frames=-1)
        if compile_now:
            self.compile()

    @property
    def _component_names(self) -> list[str]:
        names = super()._component_names
        return names + [IMAGE_ENCODER] if isinstance(getattr(self, IMAGE_ENCODER, None), OVImageEncoder) else names

    @property
    def _ov_model_paths(self) -> dict[str, str]:
        paths = {name: self._all_ov_model_paths[name] for name in super()._component_names}
        if IMAGE_ENCODER in self._component_names:
            paths[IMAGE_ENCODER] = os.path.join(IMAGE_ENCODER, OV_XML)
        return paths

    @classmethod
    def _from_pretrained(cls, model_id: str | Path, config: dict[str, Any], **kwargs: Any) -> "OVStableVideoDiffusionPipeline":
        # optimum-intel loads `image_encoder` as a torch sub-model; ours is an IR, so we read it here and hand it
        # over. A Hub id is downloaded first so both see the same local snapshot.
        if "image_encoder" not in kwargs:
            if not os.path.isdir(str(model_id)):
                model_id = snapshot_download(
                    str(model_id),
                    revision=kwargs.get("revision"),
                    token=kwargs.get("token"),
                    cache_dir=kwargs.get("cache_dir"),
                    local_files_only=kwargs.get("local_files_only", False),
                )
            kwargs["image_encoder"] = cls.load_model(Path(model_id) / IMAGE_ENCODER / OV_XML)
        return super()._from_pretrained(model_id, config, **kwargs)

    def reshape(
        self,
        batch_size: int = -1,
        height: int = -1,
        width: int = -1,
        num_images_per_prompt: int = -1,
        num_frames: int = -1,
        decode_chunk_size: int = -1,
    ) -> "OVStableVideoDiffusionPipeline":
        """Fix (or with -1 free) the shapes of every part; compiled requests are dropped and rebuilt lazily.

        The UNet always sees both guidance halves (2 × batch); the VAE decoder sees `decode_chunk_size` frames.
        """
        if batch_size > 0 and num_images_per_prompt > 0:
            batch_size *= num_images_per_prompt
        self.is_dynamic = -1 in {batch_size, height, width, num_frames}
        h = height // self.vae_scale_factor if height > 0 else -1
        w = width // self.vae_scale_factor if width > 0 else -1
        guided = 2 * batch_size if batch_size > 0 else -1
        chunk = decode_chunk_size if decode_chunk_size > 0 else num_frames
        unet_config, vae_config = self.unet.config, self.vae_decoder.config
        image_size = self.image_encoder.config.image_size if isinstance(self.image_encoder, OVImageEncoder) else 224
        shapes = {
            self.unet: {
                "sample": [guided, num_frames, unet_config.in_channels, h, w],
                "timestep": [],
                "encoder_hidden_states": [guided, 1, unet_config.cross_attention_dim],
                "added_time_ids": [guided, 3],
            },
            self.vae_encoder: {"sample": [batch_size, 3, height, width]},
            self.vae_decoder: {"latent_sample": [chunk, vae_config.latent_channels, h, w]},
        }
        if isinstance(self.image_encoder, OVImageEncoder):
            shapes[self.image_encoder] = {"pixel_values": [batch_size, 3, image_size, image_size]}
        for part, part_shapes in shapes.items():
            part.model.reshape({name: ov.PartialShape(shape) for name, shape in part_shapes.items()})
        if self.deepcache is not None:
            self.deepcache.reshape(shapes[self.unet])
        self.clear_requests()
        self._fitted = None
        return self

    def compile(self) -> None:
        """Compile every part; with DeepCache on, its two UNets instead of the plain one (which it never calls). Each
        part's IR file pages are dropped once it is compiled: at static shapes the plugin converts the weights here."""
        for component in self.components.values():
            if component is not self.unet or self.deepcache is None:
                component.compile()
                drop_source_pages(component)
        if self.deepcache is not None:
            self.deepcache.compile()

    def _encode_image(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._encode_image(*args, **kwargs)
        finally:
            release_memory(self.image_encoder)

    def _encode_vae_image(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._encode_vae_image(*args, **kwargs)
        finally:
            release_memory(self.vae_encoder)

    def decode_latents(self, *args: Any, **kwargs: Any) -> Any:
        """diffusers' chunked decode, with the UNet's working memory handed back first (its weights stay compiled)."""
        release_memory(self.unet)
        try:
            return super().decode_latents(*args, **kwargs)
        finally:
            release_memory(self.vae_decoder)

    @property
    def deepcache(self) -> DeepCacheRunner | None:
        return getattr(self.unet, "deepcache", None)

    def enable_deepcache(self, interval: int = 3, branch: int = 0, schedule: str = "uniform") -> "OVStableVideoDiffusionPipeline":
        """Run the full UNet every `interval` steps and, in between, the shallow UNet of `branch` on the cached feature
        (the folder needs `svdtool export --cache-branch K`); `interval` 1 turns DeepCache off."""
        settings = DeepCacheSettings(interval, branch, schedule)
        folder = Path(self.unet.model_save_dir).parent
        check_available(folder, settings)
        self.unet.deepcache = DeepCacheRunner(folder, settings, self._device, self.ov_config) if settings.enabled else None
        if self.deepcache is not None:
            self.deepcache.reshape({port.get_any_name(): [-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
                                    for port in self.unet.model.inputs})
        return self

    def fit(self, height: int, width: int, num_frames: int, decode_chunk_size: int, guided: bool = True) -> None:
        """Give a dynamic IR the static shapes of one generation setting, and compile for them once.

        OpenVINO's CPU plugin runs static shapes faster (svd-mini's UNet call on a 2-core Zen 4: 177 → 138 ms for the
        FP16 IR, 159 → 109 ms for INT8). A pipeline whose shapes were fixed by the user (an IR exported with --static,
        or a `reshape` call) is left as it is. The VAE decoder stays dynamic in frames when the chunk does not divide
        them (diffusers' last chunk is shorter), the UNet's batch is 1 without classifier-free guidance or with
        `guidance_in_turn` (its two halves then run one after the other: half the UNet's working memory; DeepCache, which
        caches one batch's features, keeps both halves together)."""
        if not (self.is_dynamic or self._fitted):
            return
        wanted = (height, width, num_frames, decode_chunk_size, guided, self.guidance_in_turn)
        if self._fitted == wanted:
            return
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        batch = 2 if guided and not (self.guidance_in_turn and self.deepcache is None) else 1
        chunk = decode_chunk_size if num_frames % decode_chunk_size == 0 else -1
        shapes = {
            self.unet: {"sample": [batch, num_frames, self.unet.config.in_channels, h, w], "timestep": [],
                        "encoder_hidden_states": [batch, 1, self.unet.config.cross_attention_dim], "added_time_ids": [batch, 3]},
            self.vae_encoder: {"sample": [1, 3, height, width]},
            self.vae_decoder: {"latent_sample": [chunk, self.vae_decoder.config.latent_channels, h, w]},
            self.image_encoder: {"pixel_values": [1, 3, self.image_encoder.config.image_size, self.image_encoder.config.image_size]},
        }
        self.clear_requests()
        for part, part_shapes in shapes.items():
            dynamic = {port.get_any_name(): port.get_partial_shape() for port in part.model.inputs}
            part.model.reshape({name: ov.PartialShape(shape) for name, shape in part_shapes.items()})
            if part is self.unet and self.deepcache is not None:
                continue  # DeepCache's own pair runs instead of the plain UNet
            try:
                part.compile()
            except RuntimeError:
                # OpenVINO 2026.4 cannot compile some weight-compressed IRs (nncf's w8/w4/hybrid) once reshaped to
                # static shapes ("m_element_type.is_static"); such a part keeps its dynamic shapes.
                part.model.reshape(dynamic)
                part.clear_requests()
                part.compile()
        if self.deepcache is not None:
            self.deepcache.reshape(shapes[self.unet])
        self.is_dynamic = False
        self._fitted = wanted
        self.compile()

    @property
    def num_frames(self) -> int:
        """Frames baked into a static UNet, or -1 when dynamic."""
        dim = self.unet.model.input("sample").get_partial_shape()[1]
        return -1 if dim.is_dynamic else dim.get_length()
