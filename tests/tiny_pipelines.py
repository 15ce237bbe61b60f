"""Tiny random-weight diffusers pipelines, built offline and saved to a folder.

Like diffusers' own ``get_dummy_components``: small denoisers, VAEs and text
encoders from configs, and tokenizers (CLIP and Qwen2 byte-level BPE, Gemma BPE,
T5 Unigram) whose vocabularies are written here, so nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    AutoencoderKLQwenImage,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    PNDMScheduler,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from llmi.tools.qwen_processor import PilImageProcessor

START, END = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77
WORDS = ("a", "cat", "the", "red", "sky", "photo", "of", "make", "it", "blue", "snow")


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Merges that build each word left to right, ending in CLIP's ``</w>``."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
    return merges


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write vocab.json and merges.txt into ``folder`` and load them."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = byte_alphabet()
    merges = word_merges(WORDS)
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges), START, END]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=MAX_TOKENS)


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS,
        vocab_size=1000,
    )
    return CLIPTextModel(config)


def tiny_unet(in_channels: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )


def tiny_components(folder: Path, unet_in_channels: int) -> dict[str, object]:
    torch.manual_seed(0)
    tokenizer = write_tokenizer(folder / "tokenizer-source")
    return {
        "unet": tiny_unet(unet_in_channels),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "scheduler": PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def save_text_to_image(folder: Path) -> Path:
    """A tiny StableDiffusionPipeline saved under ``folder``; returns its path."""
    target = folder / "tiny-sd"
    StableDiffusionPipeline(**tiny_components(folder, 4)).save_pretrained(target)
    return target


def save_instruct_pix2pix(folder: Path) -> Path:
    """A tiny StableDiffusionInstructPix2PixPipeline (its UNet reads 8 channels)."""
    target = folder / "tiny-pix2pix"
    StableDiffusionInstructPix2PixPipeline(**tiny_components(folder, 8)).save_pretrained(target)
    return target


# --- the other families users pick, after each one's get_dummy_components in diffusers' tests


def t5_tokenizer() -> T5Tokenizer:
    """A T5 (SentencePiece Unigram) tokenizer over WORDS, built in memory."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0),
              *((f"▁{word}", -1.0) for word in WORDS),
              *((chr(c), -5.0) for c in range(ord("a"), ord("z") + 1))]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_TOKENS)


def tiny_t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8,
                                   num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1))


def byte_bpe_vocab(extra: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A GPT-2-style byte-level vocabulary and merges spelling WORDS, plus ``extra`` tokens."""
    merges = [(a.removesuffix("</w>"), b.removesuffix("</w>")) for a, b in word_merges(WORDS)]
    tokens = [*byte_alphabet(), *(a + b for a, b in merges), *extra]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def qwen_tokenizer() -> Qwen2Tokenizer:
    vocab, merges = byte_bpe_vocab(QWEN_SPECIAL)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL[1:])})
    return tokenizer


def gemma_tokenizer() -> GemmaTokenizer:
    vocab, merges = byte_bpe_vocab(("<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
                                    "<start_of_turn>", "<end_of_turn>"))
    return GemmaTokenizer(vocab=vocab, merges=merges)


def clip_pair(folder: Path, projection: type = CLIPTextModelWithProjection,
              ) -> tuple[CLIPTokenizer, Any]:
    tokenizer = write_tokenizer(folder / "tokenizer-source")
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=MAX_TOKENS,
        vocab_size=1000, projection_dim=32, hidden_act="gelu",
    )
    return tokenizer, projection(config)


def one_level_vae(latent_channels: int, sample_size: int = 32) -> AutoencoderKL:
    return AutoencoderKL(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=(4,),
        layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def save_img2img(folder: Path) -> Path:
    """A tiny StableDiffusionImg2ImgPipeline, Stable Diffusion's own image-to-image."""
    target = folder / "tiny-img2img"
    StableDiffusionImg2ImgPipeline(**tiny_components(folder, 4)).save_pretrained(target)
    return target


def save_sdxl(folder: Path) -> Path:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64,
    )
    tokenizer, text_encoder = clip_pair(folder, CLIPTextModel)
    tokenizer_2, text_encoder_2 = clip_pair(folder)
    target = folder / "tiny-sdxl"
    StableDiffusionXLPipeline(
        unet=unet, vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler(steps_offset=1, timestep_spacing="leading"),
    ).save_pretrained(target)
    return target


def save_sd3(folder: Path) -> Path:
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=64, out_channels=4,
    )
    tokenizer, text_encoder = clip_pair(folder)
    tokenizer_2, text_encoder_2 = clip_pair(folder)
    tokenizer_3 = t5_tokenizer()
    target = folder / "tiny-sd3"
    StableDiffusion3Pipeline(
        transformer=transformer, vae=one_level_vae(4), scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, text_encoder_3=tiny_t5(tokenizer_3), tokenizer_3=tokenizer_3,
    ).save_pretrained(target)
    return target


def flux_components(folder: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    tokenizer, text_encoder = clip_pair(folder, CLIPTextModel)
    tokenizer_2 = t5_tokenizer()
    return {"transformer": transformer, "vae": one_level_vae(1),
            "scheduler": FlowMatchEulerDiscreteScheduler(), "text_encoder": text_encoder,
            "tokenizer": tokenizer, "text_encoder_2": tiny_t5(tokenizer_2),
            "tokenizer_2": tokenizer_2}


def save_flux(folder: Path) -> Path:
    target = folder / "tiny-flux"
    FluxPipeline(**flux_components(folder)).save_pretrained(target)
    return target


def save_flux_kontext(folder: Path) -> Path:
    """Kontext resizes the source to about a megapixel: a VAE of factor 8 keeps that small."""
    target = folder / "tiny-flux-kontext"
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    )
    FluxKontextPipeline(**flux_components(folder) | {"vae": vae}).save_pretrained(target)
    return target


def save_pixart_sigma(folder: Path) -> Path:
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    tokenizer = t5_tokenizer()
    target = folder / "tiny-pixart-sigma"
    PixArtSigmaPipeline(
        transformer=transformer, vae=tiny_vae(), scheduler=DDIMScheduler(),
        text_encoder=tiny_t5(tokenizer), tokenizer=tokenizer,
    ).save_pretrained(target)
    return target


def save_sana(folder: Path) -> Path:
    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2,
        attention_head_dim=4, num_cross_attention_heads=2, cross_attention_head_dim=4,
        cross_attention_dim=8, caption_channels=8, sample_size=16,
    )
    # Sana draws at its nearest trained resolution (512 for sample size 16) and resizes
    # to the size asked: a VAE of factor 8 keeps that small.
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",),
        encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
        encoder_qkv_multiscales=((), (), (), (5,)), decoder_qkv_multiscales=((), (), (), (5,)),
        encoder_layers_per_block=(1,) * 4, decoder_layers_per_block=[1] * 4,
        downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )
    tokenizer = gemma_tokenizer()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=8, intermediate_size=64, max_position_embeddings=8192,
        num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2,
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
    ))
    target = folder / "tiny-sana"
    SanaPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder,
                 tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                 ).save_pretrained(target)
    return target


def qwen_components(tokenizer: Qwen2Tokenizer) -> dict[str, Any]:
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=3, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    # The edit pipelines encode the source at about a megapixel: a VAE of factor 8, as the
    # real one has, keeps its attention small.
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 2, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2,
                     "vocab_size": len(tokenizer), "bos_token_id": tokenizer.eos_token_id,
                     "eos_token_id": tokenizer.eos_token_id,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default",
                                      "type": "default"},
                     "rope_theta": 1000000.0},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16},
        hidden_size=16, vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, **ids,
    )
    return {"transformer": transformer, "vae": vae,
            "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": Qwen2_5_VLForConditionalGeneration(config).eval(),
            "tokenizer": tokenizer}


def save_qwen_image(folder: Path) -> Path:
    target = folder / "tiny-qwen-image"
    QwenImagePipeline(**qwen_components(qwen_tokenizer())).save_pretrained(target)
    return target


def save_qwen_edit(folder: Path, pipeline: type) -> Path:
    """A Qwen-Image-Edit folder as published. The processor's files are written from their
    parts, since its class needs torchvision to be built, which not every machine has."""
    tokenizer = qwen_tokenizer()
    target = folder / f"tiny-{pipeline.__name__}"
    pipeline(**qwen_components(tokenizer), processor=None).save_pretrained(target)
    index_file = target / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_file.write_text(json.dumps(index), encoding="utf-8")
    tokenizer.save_pretrained(target / "processor")
    PilImageProcessor().save_pretrained(target / "processor")
    return target


def save_qwen_image_edit(folder: Path) -> Path:
    return save_qwen_edit(folder, QwenImageEditPipeline)


def save_qwen_image_edit_plus(folder: Path) -> Path:
    return save_qwen_edit(folder, QwenImageEditPlusPipeline)


# --- IP-Adapter, laid out as h94/IP-Adapter publishes it and load_ip_adapter reads it


def save_ip_adapter(folder: Path, pipeline: Path, subfolder: str, weight_name: str,
                    image_encoder: str = "") -> Path:
    """Random IP-Adapter weights for the UNet of the pipeline saved at ``pipeline``, and a
    tiny CLIP vision encoder, as ``<folder>/tiny-ip-adapter/<subfolder>/<weight_name>`` and
    ``.../<image_encoder>`` (default ``<subfolder>/image_encoder``); returns
    ``<folder>/tiny-ip-adapter``.

    The keys are the original IP-Adapter's, which diffusers converts on loading
    (``UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers``): ``image_proj``
    holds the projection of the image embedding into 4 tokens, ``ip_adapter`` the key and
    value weights of each cross-attention layer, numbered 1, 3, 5, ... in the UNet's order.
    """
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet")
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, image_size=32, patch_size=4))
    tokens, width = 4, unet.config.cross_attention_dim
    weights = {"image_proj.proj.weight": torch.randn(tokens * width, 32) * 0.1,
               "image_proj.proj.bias": torch.zeros(tokens * width),
               "image_proj.norm.weight": torch.ones(width),
               "image_proj.norm.bias": torch.zeros(width)}
    cross = [name.removesuffix(".processor") for name in unet.attn_processors
             if name.endswith("attn2.processor")]
    for number, name in zip(range(1, 2 * len(cross), 2), cross, strict=True):
        hidden = unet.get_submodule(name).to_k.out_features
        for kind in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{number}.{kind}.weight"] = torch.randn(hidden, width) * 0.1
    target = folder / "tiny-ip-adapter"
    (target / subfolder).mkdir(parents=True, exist_ok=True)
    save_file(weights, target / subfolder / weight_name)
    encoder.save_pretrained(target / image_encoder if image_encoder
                            else target / subfolder / "image_encoder")
    return target
