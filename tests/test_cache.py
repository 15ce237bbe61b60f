"""The tool cache: an identical request reuses its image; anything that changes the image misses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

import llmi.artifacts
from llmi.artifacts import ArtifactStore
from llmi.cli import main
from llmi.context import Context
from llmi.graphs.document import build_graph
from llmi.state import ImageRequest
from llmi.tools.base import ToolCall, ToolError
from llmi.tools.cache import ToolCache
from llmi.tools.code import CodeTool
from llmi.tools.diffusion import DiffusionTool, diffusion
from llmi.tools.search import search
from llmi.tools.synthesis import applied_seed

from helpers import FakeTool, fake_tools, gradient_png, model, tag
from openai_standin import chat_server

DRAFT = (
    "# Notes\n\n"
    + tag("code", "A chart", code="plt.plot([1, 2])")
    + "\n\nText.\n\n"
    + tag("search", "A photo", query="Kyoto temple")
    + "\n\n"
    + tag("edit", "The chart, warmer", img_index=0, prompt="warmer")
)


def request(source: str = "code", slot: int = 0, attempt: int = 0, description: str = "d",
            **params: object) -> ImageRequest:
    return ImageRequest(slot=slot, source=source, description=description, params=dict(params),
                        depends_on=None, attempt=attempt)


def run(context: Context, tools, draft: str = DRAFT) -> dict[int, dict]:
    graph = build_graph(model=model(draft), tools=tools).compile()
    out = graph.invoke({"prompt": "p"}, context=context)
    manifest = json.loads(Path(out["outputs"]["manifest"]).read_text())
    return {slot["index"]: slot for slot in manifest["slots"]}


def counting_tools() -> tuple[dict[str, FakeTool], object]:
    tools = {
        "code": FakeTool("code", ("code",)),
        "search": FakeTool("search", ("query",)),
        "edit": FakeTool("edit", ("img_index", "prompt")),
    }
    return tools, fake_tools(**tools)


def calls(tools: dict[str, FakeTool]) -> int:
    return sum(len(tool.calls) for tool in tools.values())


@pytest.fixture
def seeded(context: Context) -> Context:
    # A fixed seed makes edits (and diffusion) cacheable.
    return replace(context, seed=7)


def test_a_second_identical_run_makes_no_tool_call(seeded: Context) -> None:
    tools, registry = counting_tools()
    first = run(seeded, registry)
    assert calls(tools) == 3 and not any(s["cached"] for s in first.values())
    second = run(replace(seeded, out_dir=seeded.out_dir + "-2"), registry)
    assert calls(tools) == 3
    assert [s["cached"] for s in second.values()] == [True, True, True]
    assert all(s["ok"] for s in second.values())
    for slot in second:
        assert second[slot]["image"] == first[slot]["image"]
        # The provenance is the tool's, as it was when the image was made.
        assert second[slot]["provenance"] == first[slot]["provenance"]
    assert (Path(seeded.out_dir + "-2") / second[1]["image"]["path"]).is_file()


def test_the_off_switch(seeded: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tools, registry = counting_tools()
    run(seeded, registry)
    second = run(replace(seeded, tool_cache=False), registry)
    assert calls(tools) == 6 and not any(s["cached"] for s in second.values())
    monkeypatch.setenv("LLMI_TOOL_CACHE", "0")
    assert Context().tool_cache is False
    monkeypatch.setenv("LLMI_TOOL_CACHE", "1")
    assert Context().tool_cache is True
    monkeypatch.delenv("LLMI_TOOL_CACHE")
    assert Context().tool_cache is True


def test_an_edit_without_a_seed_is_not_cached(context: Context) -> None:
    tools, registry = counting_tools()
    run(context, registry)
    second = run(context, registry)
    assert len(tools["edit"].calls) == 2
    assert [s["cached"] for s in second.values()] == [True, True, False]


def test_only_successful_results_are_cached(context: Context) -> None:
    failing = FakeTool("code", ("code",), behaviour=_fail_first_call())
    registry = fake_tools(code=failing)
    draft = tag("code", "A chart", code="plt.plot([1, 2])")
    context = replace(context, repair_rounds=0)
    first = run(context, registry, draft)
    assert not first[0]["ok"] and not first[0]["cached"]
    assert not (Path(context.artifact_dir) / "cache").exists()
    second = run(context, registry, draft)
    assert second[0]["ok"] and not second[0]["cached"] and len(failing.calls) == 2
    third = run(context, registry, draft)
    assert third[0]["cached"] and len(failing.calls) == 2


def _fail_first_call():
    state = {"calls": 0}

    def behaviour(call: ToolCall) -> None:
        state["calls"] += 1
        if state["calls"] == 1:
            raise ToolError("the backend is down")

    return behaviour


@pytest.mark.parametrize("damage", ["poisoned", "symlink", "missing", "bad entry"])
def test_a_damaged_cache_falls_back_to_the_tool(context: Context, damage: str,
                                                 tmp_path: Path) -> None:
    tools, registry = counting_tools()
    draft = tag("code", "A chart", code="plt.plot([1, 2])")
    first = run(context, registry, draft)
    store = ArtifactStore(context.artifact_dir)
    artifact = next(p for p in store.root.rglob("*.png"))
    good = artifact.read_bytes()
    entry = next((store.root / "cache").glob("*.json"))
    if damage == "poisoned":  # another image in place, as a chart process could write it
        artifact.write_bytes(gradient_png(99))
    elif damage == "symlink":  # to the right bytes, which could change once checked
        (tmp_path / "theirs.png").write_bytes(good)
        artifact.unlink()
        artifact.symlink_to(tmp_path / "theirs.png")
    elif damage == "missing":
        artifact.unlink()
    else:
        entry.write_text("{not json")
    second = run(context, registry, draft)
    assert len(tools["code"].calls) == 2
    assert second[0]["ok"] and not second[0]["cached"]
    assert second[0]["image"]["sha256"] == first[0]["image"]["sha256"]
    # The tool's new image is stored, as a file of its own, and repaired the cache.
    assert not artifact.is_symlink() and artifact.read_bytes() == good
    third = run(context, registry, draft)
    assert third[0]["cached"] and len(tools["code"].calls) == 2


# --- entries llmi did not write ---------------------------------------------------------


@pytest.fixture
def entry(cache: ToolCache, context: Context) -> tuple[str, dict]:
    """The key of a stored result and its entry as written."""
    key = cache.key(CodeTool(), request(code="x"), context)
    ref = cache.store.put(gradient_png(3))
    assert key and cache.put(key, ref, "matplotlib", {"code": "x"})
    return key, json.loads((cache.root / f"{key}.json").read_text())


def rejected(cache: ToolCache, key: str, caplog: pytest.LogCaptureFixture) -> bool:
    """Whether ``key`` misses, its entry removed with a warning."""
    path = cache.root / f"{key}.json"
    missed = cache.get(key) is None
    warned = [r for r in caplog.records
              if r.levelno == logging.WARNING and str(path) in r.getMessage()]
    return missed and not path.exists() and len(warned) == 1


def test_an_intact_entry_is_served(cache: ToolCache, entry: tuple[str, dict]) -> None:
    key, written = entry
    hit = cache.get(key)
    assert hit is not None and hit.image == written["image"]
    assert hit.backend == "matplotlib" and hit.provenance == {"code": "x"}
    assert hashlib.sha256(hit.data).hexdigest() == written["image"]["sha256"]


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_an_entry_whose_artifact_is_missing_or_altered_is_a_miss(
    cache: ToolCache, entry: tuple[str, dict], damage: str
) -> None:
    key, written = entry
    artifact = cache.store.path(written["image"])
    if damage == "missing":
        artifact.unlink()
    else:
        artifact.write_bytes(gradient_png(4))
    assert cache.get(key) is None
    assert not artifact.exists()  # the store does not keep what is not its image


def test_an_entry_copied_to_another_keys_file_is_a_miss(
    cache: ToolCache, entry: tuple[str, dict], context: Context,
    caplog: pytest.LogCaptureFixture
) -> None:
    key, written = entry
    other = cache.key(CodeTool(), request(code="y"), context)
    assert other and other != key
    (cache.root / f"{other}.json").write_text(json.dumps(written))
    assert rejected(cache, other, caplog)
    assert cache.get(key) is not None


def test_a_linked_entry_is_a_miss(cache: ToolCache, entry: tuple[str, dict], tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    key, written = entry
    path = cache.root / f"{key}.json"
    (tmp_path / "theirs.json").write_text(json.dumps(written))
    path.unlink()
    path.symlink_to(tmp_path / "theirs.json")
    assert rejected(cache, key, caplog)
    assert (tmp_path / "theirs.json").exists()


HAND_WRITTEN = {
    "not JSON": lambda e: "{not json",
    "not an object": lambda e: list(e),  # its field names, in a list
    "no key": lambda e: {k: v for k, v in e.items() if k != "key"},
    "a field more": lambda e: {**e, "served_by": "a chart"},
    "another version": lambda e: {**e, "version": 1},
    "a backend not text": lambda e: {**e, "backend": 5},
    "a provenance not a dict": lambda e: {**e, "provenance": ["x"]},
    "a time not a number": lambda e: {**e, "created": "now"},
    "an image without its size": lambda e: {**e, "image": {
        k: v for k, v in e["image"].items() if k != "width"}},
    "an image with another size": lambda e: {**e, "image": {**e["image"], "width": 1}},
    "a sha256 that is not one": lambda e: {**e, "image": {**e["image"], "sha256": "../x"}},
}


@pytest.mark.parametrize("damage", list(HAND_WRITTEN))
def test_a_hand_written_entry_is_a_miss(
    cache: ToolCache, entry: tuple[str, dict], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    key, written = entry
    forged = HAND_WRITTEN[damage](written)
    text = forged if isinstance(forged, str) else json.dumps(forged)
    (cache.root / f"{key}.json").write_text(text)
    assert rejected(cache, key, caplog)


def test_a_failed_entry_write_leaves_no_temporary_file(
    cache: ToolCache, entry: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, written = entry

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(llmi.artifacts.os, "replace", refuse)
    assert cache.put(key, written["image"], "matplotlib", {}) is False
    assert sorted(p.name for p in cache.root.iterdir()) == [f"{key}.json"]


# --- keys ------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> ToolCache:
    return ToolCache(ArtifactStore(tmp_path / "artifacts"))


def test_code_keys_on_the_code_only(cache: ToolCache, context: Context) -> None:
    tool = CodeTool()
    key = cache.key(tool, request(code="plt.plot([1])"), context)
    assert key is not None and len(key) == 64
    same = [
        request(code="plt.plot([1])", slot=5, attempt=2, description="other"),
    ]
    for other in same:
        assert cache.key(tool, other, replace(context, seed=3, code_timeout=1.0)) == key
    assert cache.key(tool, request(code="plt.plot([2])"), context) != key
    # Another tool under the same source never answers from these entries.
    assert cache.key(FakeTool("code", ("code",)), request(code="plt.plot([1])"), context) != key


def test_search_keys_on_query_backend_and_its_settings(
    cache: ToolCache, context: Context, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "temple.png").write_bytes(gradient_png(1))
    ctx = replace(context, image_library=str(library))
    key = cache.key(search, request("search", query="temple"), ctx)
    assert key == cache.key(search, request("search", query="temple", attempt=1, slot=3), ctx)
    assert key != cache.key(search, request("search", query="shrine"), ctx)
    assert key != cache.key(search, request("search", query="temple", description="x"), ctx)
    tavily = replace(ctx, search_backend="tavily", tavily_api_key="k1")
    tavily_key = cache.key(search, request("search", query="temple"), tavily)
    assert tavily_key != key
    # The key is not a secret's: another API key, the same entry.
    assert tavily_key == cache.key(search, request("search", query="temple"),
                                   replace(tavily, tavily_api_key="k2"))
    assert tavily_key != cache.key(search, request("search", query="temple"),
                                   replace(tavily, tavily_base_url="http://127.0.0.1:9"))
    # A changed library misses.
    (library / "shrine.png").write_bytes(gradient_png(2))
    assert key != cache.key(search, request("search", query="temple"), ctx)


def test_diffusion_keys_on_seed_backend_and_settings(cache: ToolCache, context: Context) -> None:
    ctx = replace(context, diffusion_backend="openai:m", images_base_url="http://127.0.0.1:1/v1",
                  seed=7)
    base = request("diffusion", prompt="a fox")
    key = cache.key(diffusion, base, ctx)
    assert key is not None
    assert key == cache.key(diffusion, request("diffusion", prompt="a fox", attempt=1), ctx)
    differs = [
        (request("diffusion", prompt="a cat"), ctx),
        (request("diffusion", prompt="a fox", seed=3), ctx),
        (request("diffusion", prompt="a fox", slot=1), ctx),  # seed 7 + slot
        (base, replace(ctx, seed=9)),
        (base, replace(ctx, diffusion_backend="diffusers:tiny")),
        (base, replace(ctx, image_size="512x512")),
        (base, replace(ctx, diffusion_steps=4)),
        (base, replace(ctx, diffusion_guidance=2.0)),
        (base, replace(ctx, images_base_url="http://127.0.0.1:2/v1")),
    ]
    keys = {cache.key(diffusion, r, c) for r, c in differs}
    assert None not in keys and key not in keys and len(keys) == len(differs)
    # The seed that applies is what counts: slot 1 of LLMI_SEED 7 is slot 0 of LLMI_SEED 8.
    assert cache.key(diffusion, request("diffusion", prompt="a fox", slot=1), ctx) == cache.key(
        diffusion, base, replace(ctx, seed=8))
    # A request's own seed decides, whatever LLMI_SEED is.
    seeded = request("diffusion", prompt="a fox", seed=3)
    assert cache.key(diffusion, seeded, ctx) == cache.key(diffusion, seeded, replace(ctx, seed=-1))


def test_a_drawn_seed_is_not_cached(cache: ToolCache, context: Context) -> None:
    ctx = replace(context, diffusion_backend="openai:m", seed=-1)
    assert applied_seed(request("diffusion", prompt="a fox"), ctx) is None
    assert cache.key(diffusion, request("diffusion", prompt="a fox"), ctx) is None
    assert cache.key(diffusion, request("diffusion", prompt="a fox", seed=0), ctx) is not None
    assert applied_seed(request("diffusion", slot=2), replace(ctx, seed=10)) == 12
    assert applied_seed(request("diffusion", slot=2, seed=True), replace(ctx, seed=10)) == 12


def test_a_custom_source_is_cached_only_when_its_tool_says_how(
    cache: ToolCache, context: Context
) -> None:
    plain = FakeTool("map", ("place",))
    assert cache.key(plain, request("map", place="Kyoto"), context) is None

    class MapTool(FakeTool):
        def cache_settings(self, ctx: Context, req: ImageRequest) -> dict | None:
            return {"style": "topo"} if req["params"].get("place") != "anywhere" else None

    tool = MapTool("map", ("place",))
    key = cache.key(tool, request("map", place="Kyoto"), context)
    assert key is not None and key != cache.key(tool, request("map", place="Osaka"), context)
    assert cache.key(tool, request("map", place="anywhere"), context) is None


def test_a_tool_that_changes_an_image_keys_on_that_image(
    cache: ToolCache, context: Context
) -> None:
    class Restyle(FakeTool):
        def cache_settings(self, ctx: Context, req: ImageRequest) -> dict | None:
            return {}

    tool = Restyle("restyle", ("img_index", "style"))
    req = request("restyle", img_index=0, style="ink")
    first, second = ({"sha256": c * 64, "uri": "", "mime": "image/png", "width": 8,
                      "height": 8} for c in "ab")
    assert None not in {cache.key(tool, req, context, first), cache.key(tool, req, context, second)}
    assert cache.key(tool, req, context, first) != cache.key(tool, req, context, second)
    # Without the image it points at, its image is unknown.
    assert cache.key(tool, req, context) is None


def test_an_entry_outlives_a_moved_store(tmp_path: Path, context: Context) -> None:
    store = ArtifactStore(tmp_path / "a")
    ref = store.put(gradient_png(3))
    cache = ToolCache(store)
    key = cache.key(CodeTool(), request(code="x"), context)
    assert cache.put(key, ref, "matplotlib", {"code": "x"})
    os.rename(tmp_path / "a", tmp_path / "b")
    moved = ToolCache(ArtifactStore(tmp_path / "b")).get(key)
    assert moved is not None and moved.image["sha256"] == ref["sha256"]
    assert moved.image["uri"].startswith((tmp_path / "b").as_uri())


# --- the CLI ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    draft = "# Chart\n\n" + tag("code", "Bars", code="plt.bar(['a', 'b'], [1, 2])")

    def generate(*flags: str) -> dict:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        assert main(["generate", "A chart", "--out", str(out), *flags]) == 0
        return json.loads((out / "manifest.json").read_text())["slots"][0]

    with chat_server(draft) as (url, _):
        monkeypatch.setenv("LLMI_MODEL", "m")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        first = generate()
        assert first["ok"] and not first["cached"]
        assert generate()["cached"]
        again = generate("--no-cache")
        assert again["ok"] and not again["cached"]
    capsys.readouterr()


def test_tools_of_the_registry_key_by_their_source(cache: ToolCache, context: Context) -> None:
    # The built-in tools' classes: a default registry's entries stay its own.
    assert isinstance(diffusion, DiffusionTool)
    assert cache.key(search, request("search", query="q"), context) != cache.key(
        FakeTool("search", ("query",)), request("search", query="q"), context)
