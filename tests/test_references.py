"""References (``refs``): read from tags, waited for, passed to tools, keyed in the cache."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.nodes.dispatch import Dispatch, references_notices
from llmi.state import ImageRequest, ImageResult
from llmi.tags import TagScanner, parse_draft
from llmi.tools.base import ToolCall, ToolError, ToolOutput, without_references
from llmi.tools.cache import ToolCache
from llmi.tools.diffusion import diffusion

from helpers import FakeTool, fake_tools, gradient_png, tag

REQUIRED = {"search": ("query",), "diffusion": ("prompt",), "edit": ("img_index", "prompt")}


def request(slot: int, source: str = "diffusion", refs: list[int] | None = None,
            **params: object) -> ImageRequest:
    made = ImageRequest(slot=slot, source=source, description=f"image {slot}",
                        params={"prompt": f"p{slot}", **params},
                        depends_on=params.get("img_index"), attempt=0)  # type: ignore[typeddict-item]
    if refs:
        made["refs"] = refs
    return made


# The parser


def test_a_tag_s_refs_become_its_request_s_refs() -> None:
    draft = (tag("diffusion", "Fox", prompt="a red fox") + "The fox runs."
             + tag("diffusion", "Fox again", prompt="the fox in snow", refs=[0, 0])
             + tag("edit", "Scarf", img_index=1, prompt="add a scarf", refs=[1, 0]))
    plan = parse_draft(draft, REQUIRED)
    first, second, third = plan.requests
    assert "refs" not in first
    assert (second["refs"], second["params"]["refs"]) == ([0], [0])
    # The image an edit changes is its source already.
    assert (third["refs"], third["depends_on"]) == ([0], 1)


def test_refs_count_input_images_first_and_may_be_one_number() -> None:
    [fox] = parse_draft(tag("diffusion", "Fox", prompt="fox", refs=1), REQUIRED,
                        n_inputs=2).requests
    assert fox["slot"] == 2 and fox["refs"] == [1]


@pytest.mark.parametrize(("refs", "error"), [
    ([1], "refs: img_index 1 does not point at an input image or an earlier image"),
    (["fox"], "refs: img_index 'fox' is not a number"),
    ([True], "refs holds True, not an image index"),
])
def test_refs_that_name_no_earlier_image_are_a_bad_tag(refs: object, error: str) -> None:
    plan = parse_draft(tag("search", "Shrine", query="shrine")
                       + tag("diffusion", "Fox", prompt="fox", refs=refs), REQUIRED)
    [failed] = plan.failures
    assert failed["slot"] == 1 and failed["error"].startswith(f"bad tag: {error}")


def test_refs_of_a_source_that_takes_no_references_stay_params() -> None:
    [search] = parse_draft(tag("search", "Shrine", query="shrine", refs=[5]), REQUIRED).requests
    assert "refs" not in search and search["params"]["refs"] == [5]
    [fox] = parse_draft(tag("diffusion", "Fox", prompt="fox", refs=[5]), REQUIRED,
                        reference_sources=()).requests
    assert "refs" not in fox


def test_the_streamed_scanner_reads_refs_as_the_parser_does() -> None:
    draft = tag("diffusion", "Fox", prompt="fox") + tag("diffusion", "Fox", prompt="f", refs=[0])
    scanner = TagScanner(REQUIRED)
    streamed = [r for i in range(0, len(draft), 7) for r in scanner.feed(draft[i:i + 7])]
    assert streamed == parse_draft(draft, REQUIRED).requests


# Dispatch


def references_tools(**behaviours) -> tuple[FakeTool, dict]:
    diffusion_tool = FakeTool("diffusion", ("prompt",), takes_references=True,
                              behaviour=behaviours.get("diffusion", lambda call: None))
    return diffusion_tool, fake_tools(diffusion=diffusion_tool, search=FakeTool(
        "search", ("query",), behaviour=behaviours.get("search", lambda call: None)))


def test_a_request_waits_for_its_references_and_gets_their_bytes(context: Context) -> None:
    tool, tools = references_tools()
    results = Dispatch(tools).run(
        {"prompt": "p", "requests": [request(0), request(1, refs=[0]), request(2, refs=[0, 1])]},
        context)
    calls = {call.request["slot"]: call for call in tool.calls}
    store = ArtifactStore(context.artifact_dir)
    images = {r["slot"]: store.get(r["image"]) for r in results}
    assert calls[0].references == ()
    assert calls[1].references == (images[0],)
    assert calls[2].references == (images[0], images[1])
    assert [r.get("refs") for r in results] == [None, [0], [0, 1]]
    assert results[2]["provenance"]["referenced"] == [results[0]["image"]["sha256"],
                                                      results[1]["image"]["sha256"]]


def test_references_serialise_nothing_else(context: Context) -> None:
    # The search and the first fox run at once: each waits until the other has started.
    both = threading.Barrier(2, timeout=10)
    tool, tools = references_tools(
        diffusion=lambda call: call.request["slot"] == 0 and both.wait(),
        search=lambda call: both.wait())
    results = Dispatch(tools).run({"prompt": "p", "requests": [
        request(0), request(1, "search", query="shrine"), request(2, refs=[0])]}, context)
    assert all(r["ok"] for r in results)


def test_an_image_whose_reference_failed_is_made_from_the_others(context: Context) -> None:
    def fail_first(call: ToolCall) -> None:
        if call.request["slot"] == 0:
            raise ToolError("the server is down", kind="http", transient=True)

    tool, tools = references_tools(diffusion=fail_first)
    failed, made = Dispatch(tools).run(
        {"prompt": "p", "requests": [request(0), request(1, refs=[0])]}, context)
    assert not failed["ok"]
    assert made["ok"] and made["refs"] == [] and "referenced" not in made["provenance"]
    assert [call.references for call in tool.calls if call.request["slot"] == 1] == [()]


def test_a_reference_made_in_an_earlier_round_is_used(context: Context) -> None:
    tool, tools = references_tools()
    earlier = Dispatch(tools).run({"prompt": "p", "requests": [request(0)]}, context)
    state = {"prompt": "p", "requests": [request(0), request(1, refs=[0])], "results": earlier}
    [made] = Dispatch(tools).run(state, context)
    assert made["refs"] == [0]
    assert tool.calls[-1].references == (ArtifactStore(context.artifact_dir).get(earlier[0]["image"]),)


def test_failed_results_keep_the_refs_they_asked_for(context: Context) -> None:
    def fail(call: ToolCall) -> None:
        if call.request["slot"] == 1:
            raise ToolError("refused", kind="http")

    _, tools = references_tools(diffusion=fail)
    asked = request(1, refs=[0]) | {"subject": "Fen the fox"}
    _, failed = Dispatch(tools).run({"prompt": "p", "requests": [request(0), asked]}, context)
    assert (failed["ok"], failed["refs"], failed["subject"]) == (False, [0], "Fen the fox")


# The tool cache


def test_the_cache_keys_a_request_on_its_reference_images(context: Context) -> None:
    ctx = replace(context, seed=1, diffusion_backend="diffusers:tiny")
    cache = ToolCache(ArtifactStore(ctx.artifact_dir))
    fox = ArtifactStore(ctx.artifact_dir).put(gradient_png(1))
    snow = ArtifactStore(ctx.artifact_dir).put(gradient_png(2))
    linked = request(1, refs=[0])
    assert cache.key(diffusion, linked, ctx) is None  # its references are not made yet
    keys = {cache.key(diffusion, linked, ctx, None, refs) for refs in ([], [fox], [snow], [fox, snow])}
    assert len(keys) == 4
    # A request without refs keys as it always did.
    assert cache.key(diffusion, request(1), ctx) == cache.key(diffusion, request(1), ctx, None, [])


# Telling the user


def ignored(slot: int, reason: str, source: str = "diffusion") -> ImageResult:
    return ImageResult(slot=slot, source=source, description="", ok=True, image=None, error=None,
                       tool=source, backend="b", provenance=without_references(reason),
                       seconds=0.0, attempt=0)


def test_each_reason_images_were_made_without_references_is_told_once_a_run() -> None:
    made = [ignored(1, "dall-e-3 takes no reference images"),
            ignored(2, "dall-e-3 takes no reference images"),
            ignored(3, "InstructPix2Pix edits one image", "edit")]
    assert references_notices([], made) == [
        "diffusion: dall-e-3 takes no reference images; its images are made without their "
        "references (see the manifest's references_ignored)",
        "edit: InstructPix2Pix edits one image; its images are made without their references "
        "(see the manifest's references_ignored)",
    ]
    assert references_notices(made[:1], made[1:]) == [references_notices([], made)[1]]


def test_dispatch_sends_the_notice_as_a_stream_event(context: Context) -> None:
    from llmi.graphs.document import build_graph
    from helpers import model

    def refuse(call: ToolCall) -> ToolOutput:
        return ToolOutput(gradient_png(call.request["slot"]), "fake",
                          without_references("fake diffusion takes no reference images"))

    class Refusing(FakeTool):
        def __call__(self, call: ToolCall) -> ToolOutput:
            self.calls.append(call)
            return refuse(call)

    tools = fake_tools(diffusion=Refusing("diffusion", ("prompt",), takes_references=True))
    draft = tag("diffusion", "Fox", prompt="fox") + tag("diffusion", "Fox", prompt="f", refs=[0])
    graph = build_graph(model=model(draft), tools=tools).compile()
    events = [event for event in graph.stream({"prompt": "p"}, context=replace(
        context, consistency="tags"), stream_mode="custom") if event["llmi"] == "notice"]
    assert [event["text"].split(";")[0] for event in events] == [
        "diffusion: fake diffusion takes no reference images"]


def test_an_image_made_without_its_references_is_not_cached(context: Context) -> None:
    store = ArtifactStore(context.artifact_dir)
    cache = ToolCache(store)
    image = store.put(gradient_png(1))
    assert not cache.put("a" * 64, image, "b", without_references("no edits route"))
    assert cache.put("b" * 64, image, "b", {"seed": 1})
    assert cache.get("a" * 64) is None and cache.get("b" * 64) is not None


def test_ip_adapter_weights_key_a_diffusers_image_made_from_references(context: Context) -> None:
    ctx = replace(context, seed=1, diffusion_backend="diffusers:tiny")
    cache = ToolCache(ArtifactStore(ctx.artifact_dir))
    fox = ArtifactStore(ctx.artifact_dir).put(gradient_png(1))
    adapted = replace(ctx, ip_adapter="h94/IP-Adapter")
    assert (cache.key(diffusion, request(1, refs=[0]), ctx, None, [fox])
            != cache.key(diffusion, request(1, refs=[0]), adapted, None, [fox]))
    assert cache.key(diffusion, request(1), ctx) == cache.key(diffusion, request(1), adapted)
    on_api = replace(ctx, diffusion_backend="openai:gpt-image-1")
    assert (cache.key(diffusion, request(1, refs=[0]), on_api, None, [fox])
            == cache.key(diffusion, request(1, refs=[0]), replace(on_api, ip_adapter="x"), None, [fox]))


def test_an_image_made_again_that_fails_is_not_edited_as_it_was(context: Context) -> None:
    def fail_again(call: ToolCall) -> None:
        if call.request["attempt"] == 1:
            raise ToolError("refused", kind="http")

    tool, tools = references_tools(diffusion=fail_again)
    edit = request(1, "edit", img_index=0)
    earlier = Dispatch(tools).run({"prompt": "p", "requests": [request(0), edit]}, context)
    again = [request(0) | {"attempt": 1}, edit | {"attempt": 1}]
    failed, edited = Dispatch(tools).run(
        {"prompt": "p", "requests": again, "results": earlier}, context)
    assert not failed["ok"]
    assert (edited["ok"], edited["failure"]) == (False, "source_failed")
