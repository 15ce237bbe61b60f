"""Diffusion batching: four concurrent text-to-image requests in one pipeline call, or four calls.

Drives the diffusers backend (``llmi.tools.pipelines.text_to_image``) in one process
with four requests (four prompts, seeds 7 to 10): batched, from four threads at once
into a backend that batches up to four requests per call, as dispatch runs its slots;
and sequential, one after the other into a backend that makes one call per request.
The two alternate, so both see the same machine; a round of each comes first, outside
the figures, to load the pipeline and warm it. Reports the median wall time for the
four images and per image, the pipeline calls per four (counted where the pipeline
decodes its latents, once per call), and how far the batched images stray from the
sequential ones made with the same seeds. Target: batched takes less wall time.

Always on the CPU: a tiny random-weight Stable Diffusion pipeline (``tests/tiny_pipelines.py``)
at 32x32 and 4 steps, torch on one thread as the tests run it, since spinning OpenMP
threads stall for seconds when other processes share the cores. There batching shares
only what each call costs whatever its batch (prompt encoding, the Python of every
step and layer, the image conversion), so the gain is largest at small sizes: at
64x64 it shrinks, and at 128x128, where convolutions dominate, one image keeps the CPU
as busy as four and it is gone. With a CUDA GPU, also a Stable Diffusion 1.5-sized
pipeline (random weights, built from the configs, nothing downloaded) at 512x512 and
20 steps, where batching should gain most: one image leaves much of a GPU idle.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from bench.report import Report, p50, ratio, seconds
from llmi.context import Context
from llmi.state import ImageRequest
from llmi.tools import pipelines
from llmi.tools.base import Backend, ToolCall, ToolOutput
from llmi.tools.pipelines import release_pipelines, text_to_image
from tests.tiny_pipelines import MAX_TOKENS, save_text_to_image, write_tokenizer

NAME = "diffusion"
PROMPTS = ("a photo of a red cat", "the blue sky", "snow", "a cat of snow")
SEED = 7
DEADLINE_S = 600.0
MODES = ("batched", "sequential")


@dataclass(frozen=True)
class Setup:
    """One pipeline to measure: what it is, where it runs, what it makes, how often."""

    label: str
    device: str
    size: str
    steps: int
    repeats: int

    def __str__(self) -> str:
        return f"{self.size}, {self.steps} steps, {self.repeats} rounds each"


@dataclass(frozen=True)
class Measured:
    walls: dict[str, list[float]]
    """Seconds for the four images, per round, batched and sequential."""
    calls: dict[str, list[int]]
    """Pipeline calls for the four images, per round."""
    difference: int
    """Largest difference of a pixel channel (0 to 255), batched against sequential."""


def run(quick: bool) -> Report:
    cpu = Setup("CPU, tiny pipeline", "cpu", "32x32", 4, 3 if quick else 20)
    gpu = Setup("GPU, SD 1.5-sized", "cuda", "512x512", 20, 2 if quick else 5)
    report = Report(
        NAME, "Diffusion batching",
        f"{len(PROMPTS)} text-to-image requests through the diffusers backend: batched (sent "
        f"at once from {len(PROMPTS)} threads, up to {len(PROMPTS)} per pipeline call) and "
        "sequential (one after the other, one per call), alternating; median of the rounds. "
        f"CPU: tiny random-weight Stable Diffusion, torch on 1 thread, {cpu}. GPU: Stable "
        f"Diffusion 1.5-sized, random weights, {gpu}.",
        ("", f"batched ({len(PROMPTS)} concurrent)", f"sequential ({len(PROMPTS)} calls)",
         "sequential / batched"),
    )
    with tempfile.TemporaryDirectory() as temp, one_torch_thread():
        add(report, cpu, measure(cpu, save_text_to_image(Path(temp))))
    if not torch.cuda.is_available():
        report.notes.append("No GPU: the full-size run was skipped.")
        return report
    with tempfile.TemporaryDirectory() as temp:
        add(report, gpu, measure(gpu, save_full_size(Path(temp), gpu.device)))
    return report


@contextmanager
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def add(report: Report, setup: Setup, figures: Measured) -> None:
    walls = {mode: p50(figures.walls[mode]) for mode in MODES}
    calls = {mode: sum(figures.calls[mode]) / len(figures.calls[mode]) for mode in MODES}
    speedup = walls["sequential"] / walls["batched"]
    report.row(f"{setup.label}: wall for {len(PROMPTS)}, median", seconds(walls["batched"]),
               seconds(walls["sequential"]), ratio(speedup))
    report.row(f"{setup.label}: per image", seconds(walls["batched"] / len(PROMPTS)),
               seconds(walls["sequential"] / len(PROMPTS)), ratio(speedup))
    report.row(f"{setup.label}: pipeline calls for {len(PROMPTS)}", f"{calls['batched']:g}",
               f"{calls['sequential']:g}", ratio(calls["sequential"] / calls["batched"]))
    same = ("are identical" if figures.difference == 0 else
            f"differ by at most {figures.difference} of 255 in a pixel channel")
    report.notes.append(f"{setup.label}: batched and sequential images from the same seeds "
                        f"{same}.")
    report.target(f"{len(PROMPTS)} concurrent requests batched take less wall time than "
                  f"{len(PROMPTS)} sequential calls ({setup.label})", speedup > 1)


def measure(setup: Setup, model: Path) -> Measured:
    backends = {"batched": text_to_image(str(model), max_batch=len(PROMPTS)),
                "sequential": text_to_image(str(model), max_batch=1)}
    calls = requests(setup)
    try:
        for mode in MODES:  # loads the pipeline, then warms it for both batch sizes
            ROUNDS[mode](backends[mode], calls)
        walls: dict[str, list[float]] = {mode: [] for mode in MODES}
        counts: dict[str, list[int]] = {mode: [] for mode in MODES}
        images: dict[str, list[np.ndarray]] = {}
        with decoded_batches(loaded_pipeline(model)) as batches:
            for _ in range(setup.repeats):
                for mode in MODES:
                    batches.clear()
                    started = time.perf_counter()
                    outputs = ROUNDS[mode](backends[mode], calls)
                    walls[mode].append(time.perf_counter() - started)
                    counts[mode].append(len(batches))
                    images[mode] = [pixels(output) for output in outputs]
        difference = max(int(np.abs(batched - alone).max())
                         for batched, alone in zip(images["batched"], images["sequential"]))
        return Measured(walls, counts, difference)
    finally:
        release_pipelines()


def requests(setup: Setup) -> list[ToolCall]:
    context = Context(image_size=setup.size, diffusion_steps=setup.steps, seed=SEED,
                      device=setup.device)
    return [ToolCall(request=ImageRequest(slot=slot, source="diffusion", description=prompt,
                                          params={"prompt": prompt}, depends_on=None, attempt=0),
                     context=context, deadline_s=DEADLINE_S)
            for slot, prompt in enumerate(PROMPTS)]


def concurrently(backend: Backend, calls: list[ToolCall]) -> list[ToolOutput]:
    with ThreadPoolExecutor(len(calls)) as threads:
        return list(threads.map(backend, calls))


def one_by_one(backend: Backend, calls: list[ToolCall]) -> list[ToolOutput]:
    return [backend(call) for call in calls]


ROUNDS: dict[str, Callable[[Backend, list[ToolCall]], list[ToolOutput]]] = {
    "batched": concurrently, "sequential": one_by_one}


def loaded_pipeline(model: Path) -> Any:
    # The backend keeps its pipelines to itself; a benchmark may look.
    return next(runner.pipe for runner in pipelines._runners.values()
                if runner.model == str(model))


@contextmanager
def decoded_batches(pipe: Any) -> Iterator[list[int]]:
    """The images in each batch the pipeline's VAE decodes: one batch per pipeline call."""
    batches: list[int] = []
    hook = pipe.vae.decoder.register_forward_pre_hook(
        lambda module, args: batches.append(args[0].shape[0]))
    try:
        yield batches
    finally:
        hook.remove()


def pixels(output: ToolOutput) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(output.data)).convert("RGB"), dtype=np.int16)


def save_full_size(folder: Path, device: str) -> Path:
    """A Stable Diffusion 1.5-sized pipeline with random weights, saved in fp16 under ``folder``.

    The configs are SD 1.5's (UNet, VAE, CLIP ViT-L/14 text encoder, PNDM scheduler); the
    tokenizer is the tests' small offline one, which the larger vocabulary covers.
    """
    torch.manual_seed(0)
    tokenizer = write_tokenizer(folder / "tokenizer-source")
    with torch.device(device):  # random init of ~1B parameters takes long on the CPU
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            sample_size=512, in_channels=3, out_channels=3, latent_channels=4,
            layers_per_block=2, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=MAX_TOKENS,
            hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        unet=unet.half(), vae=vae.half(), text_encoder=text_encoder.half(), tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )
    target = folder / "sd15-sized"
    pipe.save_pretrained(target)
    return target
