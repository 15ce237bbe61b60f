"""Local diffusers pipelines as backends: ``diffusers:<model id or path>`` for diffusion and edit.

Imported only when a ``diffusers`` backend is chosen. Each pipeline is loaded once per
process per (model, device, dtype, ``LLMI_IP_ADAPTER``) and driven by one worker thread,
because diffusers pipelines are not thread-safe. The worker batches text-to-image requests that arrive
within a short window and share their settings (size, steps, guidance) into one call,
each with its own seed; edits run one at a time.

- Device and dtype: ``LLMI_DEVICE`` when set; else CUDA (bf16 on Ampere and newer, else
  fp16), Apple MPS (fp16), or the CPU (fp32).
- Steps and guidance go to the pipeline only when set, so its own defaults hold otherwise.
  Only arguments the pipeline's ``__call__`` names are passed.
- Seeds: the request's ``params['seed']`` (a verifier's retry), else ``LLMI_SEED`` + the
  slot index, else a drawn seed; the seed used is recorded.
- Size: ``LLMI_IMAGE_SIZE`` when set; else the pipeline's native size, the one it was
  trained at and draws when given none (512x512 for Stable Diffusion 1.5, 1024x1024 for
  SDXL, SD3, Flux, PixArt-Sigma 1024, Sana 1024 and Qwen-Image). Sides are rounded to the
  multiple the pipeline needs and the image is resized to the setting.
- Edits: the source is flattened to RGB (transparency on white) and worked on at its own
  size, scaled down to at most the pixel count of ``LLMI_IMAGE_SIZE`` (else the native
  size); the result comes back at ``LLMI_EDIT_SIZE`` or the source's size.
- References (a request's ``refs``) go where the pipeline takes them: see
  ``llmi.tools.pipeline_references``. Requests share a call only when their references are
  the same, since a pipeline applies the images of a call to every prompt in it.
"""

from __future__ import annotations

import atexit
import gc
import inspect
import io
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch
from diffusers import DiffusionPipeline
from packaging.version import Version
from PIL import Image

from llmi.context import Context, env_name
from llmi.tools.base import Backend, ToolCall, ToolError, ToolOutput
from llmi.tools.pipeline_references import (
    CallImages,
    batches,
    edit_images,
    generation_images,
    ip_adapter_files,
    readable_rgb,
    takes_ip_adapter,
)
from llmi.tools.qwen_processor import PUBLISHED_CLASS, still_image_processor, torchvision_imports
from llmi.tools.synthesis import Size, applied_seed, prompt_of, setting_size, size_text

BACKEND = "diffusers"
BATCH_WINDOW_S = 0.05
"""How long the first text-to-image request waits for others to share its call."""
MAX_BATCH = 4
"""Most images in one pipeline call; more risks running out of GPU memory."""

_REASON_CHARS = 300


def text_to_image(argument: str, *, window_s: float = BATCH_WINDOW_S,
                  max_batch: int = MAX_BATCH) -> Backend:
    """The backend of ``LLMI_DIFFUSION=diffusers:<argument>``."""
    model = _model(argument, "diffusion_backend")

    def generate(call: ToolCall) -> ToolOutput:
        return _generate(model, call, window_s, max(1, max_batch))

    return generate


def image_edit(argument: str) -> Backend:
    """The backend of ``LLMI_EDIT=diffusers:<argument>``; the pipeline must take an ``image``."""
    model = _model(argument, "edit_backend")

    def edit(call: ToolCall) -> ToolOutput:
        return _edit(model, call)

    return edit


def release_pipelines() -> None:
    """Stop the workers and drop every loaded pipeline, freeing its memory.

    Also runs at exit: a worker still inside torch when the interpreter shuts down
    aborts the process.
    """
    with _load_lock:
        runners = list(_runners.values())
        _runners.clear()
    if not runners:
        return
    for runner in runners:
        runner.close()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


atexit.register(release_pipelines)


# --- the two backends ---------------------------------------------------------------


def _generate(model: str, call: ToolCall, window_s: float, max_batch: int) -> ToolOutput:
    ctx = call.context
    deadline = time.monotonic() + call.deadline_s
    runner = _runner(model, ctx, deadline)
    size = setting_size(ctx, "image_size")
    drawn = size or _native_size(runner.pipe)
    options = _options(runner.pipe, ctx, drawn)
    images = generation_images(runner.pipe, call.references, runner.ip_adapter, drawn)
    job = _Job(_prompt(call), _seed(ctx, call), options, deadline, images,
               window_s=window_s, max_batch=max_batch if batches(runner.pipe) else 1)
    image = runner.run(job)
    if size is not None and "width" in options:
        image = _fit(image, size)
    provenance = _provenance(runner, job, ctx.image_size, image.size)
    return ToolOutput(data=_png(image), backend=BACKEND, provenance=provenance)


def _edit(model: str, call: ToolCall) -> ToolOutput:
    ctx = call.context
    deadline = time.monotonic() + call.deadline_s
    source = _source_rgb(call.source_image)
    target = setting_size(ctx, "edit_size") or source.size
    runner = _runner(model, ctx, deadline)
    if "image" not in _parameters(runner.pipe):
        raise ToolError(
            f"the diffusers pipeline {model!r} ({type(runner.pipe).__name__}) cannot edit "
            f"images: its __call__ takes no 'image'; set {env_name('edit_backend')} to an "
            "editing pipeline such as InstructPix2Pix",
            kind="config",
        )
    budget = math.prod(_edit_budget(runner, ctx))
    work = _working_size(target, budget, _size_multiple(runner.pipe))
    options = _options(runner.pipe, ctx, work)
    images = edit_images(runner.pipe, _fit(source, work), call.references, runner.ip_adapter)
    job = _Job(_prompt(call), _seed(ctx, call), options, deadline, images, alone=True)
    image = _fit(runner.run(job), target)
    provenance = _provenance(runner, job, ctx.edit_size, image.size)
    provenance["source_size"] = size_text(source.size)
    return ToolOutput(data=_png(image), backend=BACKEND, provenance=provenance)


def _edit_budget(runner: _Runner, ctx: Context) -> Size:
    """The size whose pixel count an edit works within."""
    budget = setting_size(ctx, "image_size") or _native_size(runner.pipe)
    if budget is None:
        raise ToolError(
            f"cannot tell the native size of the diffusers pipeline {runner.model!r} "
            f"({type(runner.pipe).__name__}); set {env_name('image_size')}=WxH",
            kind="config",
        )
    return budget


def _model(argument: str, setting: str) -> str:
    model = argument.strip()
    if not model:
        raise ToolError(f"set {env_name(setting)}=diffusers:<model id or local folder>",
                        kind="config")
    return model


def _prompt(call: ToolCall) -> str:
    prompt = prompt_of(call.request).strip()
    if not prompt:
        raise ToolError("the request has no prompt")
    return prompt


def _seed(ctx: Context, call: ToolCall) -> int:
    seed = applied_seed(call.request, ctx)
    return secrets.randbelow(2**31) if seed is None else seed


def _provenance(runner: _Runner, job: _Job, asked: str | None,
                size: tuple[int, int]) -> dict[str, Any]:
    """What made the image; ``asked`` is the size setting (None when unset), named as the
    images API backends name it."""
    defaults = _parameters(runner.pipe)
    return {
        "prompt": job.prompt,
        "model": runner.model,
        "seed": job.seed,
        "steps": job.options.get("num_inference_steps", _default(defaults, "num_inference_steps")),
        "guidance": job.options.get("guidance_scale", _default(defaults, "guidance_scale")),
        "size_asked": asked or None,
        "size_used": size_text(size),
        "device": runner.device,
        "dtype": str(runner.dtype).removeprefix("torch."),
    } | job.images.provenance(runner.ip_adapter)


# --- call options ---------------------------------------------------------------------


def _options(pipe: Any, ctx: Context, size: tuple[int, int] | None) -> dict[str, Any]:
    """Keyword arguments of the pipeline call, apart from prompt, generator and image."""
    accepted = _parameters(pipe)
    options: dict[str, Any] = {}
    steps, guidance = ctx.diffusion_steps, ctx.diffusion_guidance
    if steps is not None and steps > 0 and "num_inference_steps" in accepted:
        options["num_inference_steps"] = int(steps)
    if guidance is not None and guidance >= 0 and "guidance_scale" in accepted:
        options["guidance_scale"] = float(guidance)
    if size is not None and "width" in accepted and "height" in accepted:
        multiple = _size_multiple(pipe)
        options["width"], options["height"] = (_round_to(side, multiple) for side in size)
        if "max_area" in accepted:
            # Flux Kontext keeps only the aspect of width and height and draws max_area pixels.
            options["max_area"] = options["width"] * options["height"]
    if "output_type" in accepted:
        options["output_type"] = "pil"
    return options


def _parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    """The named parameters of the pipeline's ``__call__`` (not ``**kwargs``)."""
    parameters = inspect.signature(pipe.__call__).parameters.values()
    return {p.name: p for p in parameters
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def _default(parameters: dict[str, inspect.Parameter], name: str) -> Any:
    parameter = parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _native_size(pipe: Any) -> tuple[int, int] | None:
    """The (width, height) the pipeline draws when given none, found as its own ``__call__``
    finds it: latent sample size times the VAE's factor, else the call's default."""
    factor = getattr(pipe, "vae_scale_factor", None)
    sample = _sample_size(pipe)
    if isinstance(factor, int) and sample is not None:
        return sample[0] * factor, sample[1] * factor
    width, height = (_default(_parameters(pipe), side) for side in ("width", "height"))
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return None


def _sample_size(pipe: Any) -> tuple[int, int] | None:
    """The latent (width, height): ``default_sample_size`` (SDXL, SD3, Flux, Qwen-Image), else
    the denoiser's configured ``sample_size`` (Stable Diffusion 1.x/2.x, PixArt, Sana)."""
    sample = getattr(pipe, "default_sample_size", None)
    if not isinstance(sample, int):
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample, int) and sample > 0:
        return sample, sample
    if isinstance(sample, (list, tuple)) and len(sample) == 2 and all(
            isinstance(side, int) and side > 0 for side in sample):
        return sample[1], sample[0]  # configs list it as (height, width)
    return None


def _size_multiple(pipe: Any) -> int:
    """What image sides must be a multiple of: the pipeline's image processor's factor (twice
    the VAE's for Flux and Qwen-Image, which pack 2x2 latents), at least 8, which Stable
    Diffusion pipelines insist on whatever their VAE's factor."""
    processor = getattr(getattr(pipe, "image_processor", None), "config", None)
    factor = getattr(processor, "vae_scale_factor", None)
    if not isinstance(factor, int):
        factor = getattr(pipe, "vae_scale_factor", None)
    return max(8, factor) if isinstance(factor, int) else 8


def _round_to(side: int, multiple: int) -> int:
    return max(multiple, round(side / multiple) * multiple)


def _working_size(target: tuple[int, int], budget: int, multiple: int) -> tuple[int, int]:
    """``target`` scaled down to at most ``budget`` pixels, sides rounded to ``multiple``."""
    scale = min(1.0, math.sqrt(budget / math.prod(target)))
    width, height = (_round_to(round(side * scale), multiple) for side in target)
    return width, height


# --- images ---------------------------------------------------------------------------


def _source_rgb(data: bytes | None) -> Image.Image:
    if not data:
        raise ToolError("an edit needs the image it changes, and none was given")
    return readable_rgb(data, "the source image")


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# --- loading: one pipeline per (model, device, dtype, IP-Adapter setting) -------------

_runners: dict[tuple[str, str, str, str], _Runner] = {}
# diffusers 0.40 renamed from_pretrained's ``torch_dtype`` to ``dtype`` and warns on the old
# name; older releases know only ``torch_dtype``. Both arrive through **kwargs, so the
# release tells which to pass.
_DTYPE_ARGUMENT = ("dtype" if Version(diffusers.__version__).release >= (0, 40)
                   else "torch_dtype")
_load_lock = threading.Lock()


def _runner(model: str, ctx: Context, deadline: float) -> _Runner:
    device, dtype = _placement(ctx.device or "")
    adapter = (ctx.ip_adapter or "").strip()
    key = (model, device, str(dtype), adapter)
    runner = _runners.get(key)
    if runner is not None:
        return runner
    if not _load_lock.acquire(timeout=_left(deadline)):
        raise _timeout(f"loading {model!r}")
    try:
        runner = _runners.get(key)
        if runner is None:
            pipe, loaded = _load(model, device, dtype, adapter)
            runner = _runners[key] = _Runner(pipe, model, device, dtype, loaded)
    finally:
        _load_lock.release()
    if time.monotonic() >= deadline:
        # The pipeline stays loaded, so a retry finds it ready.
        raise _timeout(f"loading {model!r}")
    return runner


def _placement(requested: str) -> tuple[str, torch.dtype]:
    device = requested.strip() or _auto_device()
    try:
        kind = torch.device(device).type
    except RuntimeError as error:
        raise ToolError(f"{env_name('device')}={device!r} is not a torch device: {error}",
                        kind="config") from error
    if kind == "cuda":
        return device, torch.bfloat16 if _cuda_has_bf16(device) else torch.float16
    if kind == "mps":
        return device, torch.float16
    return device, torch.float32


def _auto_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _cuda_has_bf16(device: str) -> bool:
    # Compute capability 8 (Ampere) is the first with native bf16; older GPUs only emulate it.
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def _load(model: str, device: str, dtype: torch.dtype, adapter: str) -> tuple[Any, str | None]:
    """The pipeline on ``device``, and the IP-Adapter loaded into it, if it takes the one
    ``adapter`` names."""
    try:
        pipe = DiffusionPipeline.from_pretrained(
            model, **{_DTYPE_ARGUMENT: dtype}, **_components_built_here(model))
    except Exception as error:  # noqa: BLE001 - hub, file and config errors of every kind
        raise ToolError(f"cannot load the diffusers pipeline {model!r}: {_reason(error)}",
                        kind="config") from error
    loaded = None
    if adapter and takes_ip_adapter(pipe, _parameters(pipe)):
        loaded = _load_ip_adapter(pipe, adapter)
    try:
        pipe.to(device)
    except Exception as error:  # noqa: BLE001
        raise ToolError(f"cannot put the diffusers pipeline {model!r} on {device}: "
                        f"{_reason(error)}", kind="config") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe, loaded


def _load_ip_adapter(pipe: Any, setting: str) -> str:
    """Load the IP-Adapter ``setting`` names, with the image encoder it needs, into ``pipe``;
    returns it as provenance names it (model:subfolder:file)."""
    files = ip_adapter_files(setting, pipe)
    try:
        pipe.load_ip_adapter(files.model, subfolder=files.subfolder,
                             weight_name=files.weight_name,
                             image_encoder_folder=files.image_encoder_folder)
    except Exception as error:  # noqa: BLE001 - hub, file and shape errors of every kind
        raise ToolError(f"cannot load the IP-Adapter {env_name('ip_adapter')}={setting!r} into "
                        f"the {type(pipe).__name__}: {_reason(error)}", kind="config") from error
    return str(files)


def _components_built_here(model: str) -> dict[str, Any]:
    """Components llmi builds instead of the published ones: Qwen-Image-Edit's processor
    where torchvision cannot be imported (see ``llmi.tools.qwen_processor``)."""
    if torchvision_imports():
        return {}
    processor = DiffusionPipeline.load_config(model).get("processor") or [None, None]
    if processor[-1] != PUBLISHED_CLASS:
        return {}
    return {"processor": still_image_processor(model)}


# --- running: one worker thread per pipeline ------------------------------------------


@dataclass(eq=False)
class _Job:
    prompt: str
    seed: int
    options: dict[str, Any]
    deadline: float
    images: CallImages
    """What the call takes besides its prompt (an edit's source, references): a batch
    shares its first job's."""
    alone: bool = False
    """An edit's job, never batched."""
    window_s: float = 0.0
    max_batch: int = 1
    queued: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    result: Image.Image | None = None
    error: ToolError | None = None
    abandoned: bool = False

    def joins(self, first: _Job) -> bool:
        return (not self.alone and not first.alone and self.options == first.options
                and self.images.references == first.images.references)


class _Runner:
    """Owns one pipeline; its worker thread makes every call to it."""

    def __init__(self, pipe: Any, model: str, device: str, dtype: torch.dtype,
                 ip_adapter: str | None = None) -> None:
        self.pipe = pipe
        self.model = model
        self.device = device
        self.dtype = dtype
        self.ip_adapter = ip_adapter
        """The IP-Adapter loaded into the pipeline, as provenance names it."""
        self._jobs: list[_Job] = []
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"diffusers {model}", daemon=True)
        self._worker.start()

    def run(self, job: _Job) -> Image.Image:
        """Queue ``job`` and wait for its image until the job's deadline."""
        with self._changed:
            if self._closed:
                raise ToolError(f"the diffusers pipeline {self.model!r} was released",
                                transient=True)
            job.queued = time.monotonic()
            self._jobs.append(job)
            self._changed.notify_all()
        if not job.done.wait(_left(job.deadline)):
            job.abandoned = True
            raise _timeout(f"waiting for {self.model!r}")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Fail the queued jobs, let the running call finish, and stop the worker."""
        with self._changed:
            self._closed = True
            pending, self._jobs = self._jobs, []
            self._changed.notify_all()
        _fail(pending, ToolError(f"the diffusers pipeline {self.model!r} was released",
                                 transient=True))
        self._worker.join()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if not job.abandoned]
            if live:
                self._execute(live)

    def _next_batch(self) -> list[_Job] | None:
        """The oldest job and those queued within its window that can share its call."""
        with self._changed:
            while not self._jobs and not self._closed:
                self._changed.wait()
            if self._closed:
                return None
            first = self._jobs[0]
            until = first.queued + first.window_s
            while self._has_room(first) and (left := until - time.monotonic()) > 0:
                self._changed.wait(left)
            batch = self._mates(first)[: first.max_batch]
            self._jobs = [job for job in self._jobs if job not in batch]
            return batch

    def _has_room(self, first: _Job) -> bool:
        return not self._closed and len(self._mates(first)) < first.max_batch

    def _mates(self, first: _Job) -> list[_Job]:
        return [job for job in self._jobs if job is first or job.joins(first)]

    def _execute(self, batch: list[_Job]) -> None:
        try:
            images = self._call(batch)
        except Exception as error:  # noqa: BLE001 - every failure becomes each member's ToolError
            _fail(batch, _failure(error, self.device))
            return
        for job, image in zip(batch, images, strict=True):
            job.result = image
            job.done.set()

    def _call(self, batch: list[_Job]) -> list[Image.Image]:
        # CPU generators give the same noise for a seed on every device, and work on MPS.
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        inputs: dict[str, Any] = dict(batch[0].options)
        if len(batch) == 1:
            inputs.update(prompt=batch[0].prompt, generator=generators[0])
        else:
            inputs.update(prompt=[job.prompt for job in batch], generator=generators)
        shared = batch[0].images
        inputs.update(shared.inputs)
        if shared.ip_adapter_scale is not None:
            self.pipe.set_ip_adapter_scale(shared.ip_adapter_scale)
        images = list(self.pipe(**inputs).images)
        if len(images) != len(batch) or not all(isinstance(i, Image.Image) for i in images):
            raise ToolError(f"the diffusers pipeline {self.model!r} did not answer one PIL "
                            f"image per prompt ({len(images)} outputs for {len(batch)})")
        return [image.convert("RGB") for image in images]


def _fail(jobs: list[_Job], error: ToolError) -> None:
    for job in jobs:
        job.error = error
        job.done.set()


def _failure(error: Exception, device: str) -> ToolError:
    if isinstance(error, ToolError):
        return error
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return ToolError(
            f"the diffusers pipeline ran out of memory on {device}: {_reason(error)}; try a "
            f"smaller {env_name('image_size')} or {env_name('max_parallel')}",
            transient=True,
        )
    return ToolError(f"the diffusers pipeline failed: {type(error).__name__}: {_reason(error)}")


def _left(deadline: float) -> float:
    """Seconds until ``deadline``, as a lock or event wait takes them."""
    return min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)


def _timeout(what: str) -> ToolError:
    return ToolError(f"ran out of time {what}", kind="timeout", transient=True)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
