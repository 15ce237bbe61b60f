"""Tiny random-weight diffusers pipelines, built offline and saved to a folder.

Like diffusers' own ``get_dummy_components``: a small UNet, VAE and CLIP text
encoder from configs, and a byte-level BPE CLIP tokenizer whose vocabulary and
merges are written here, so nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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
