"""Custom stream events: what the nodes tell a watching user, through LangGraph's writer.

Every event is a dict whose ``llmi`` key names its kind:

- ``text``: a piece of the draft's text as the planner's model writes it, in ``text``;
  ``candidate`` names the test-time-scaling candidate, if any. The pieces are the answer
  only, never the model's reasoning. One with ``restart`` true says that the text sent
  before it was reasoning after all (a chat template that opens the ``<think>`` block in
  the prompt, so that only its end shows in the reply): the draft starts again with it.
  The parsed draft comes in the planner's update;
- ``slot``: an image slot was ``queued``, ``started``, ``finished`` or ``failed``, with
  ``slot``, ``source``, ``description``, ``attempt``, and when it ended ``seconds`` and
  ``error``; ``candidate`` names the test-time-scaling candidate, if any;
- ``notice``: something the user should know once, in ``text``: a backend made images
  without the reference images their requests had, because it takes none;
- ``repair``: the verifier tried a repair: ``slot``, ``kind``, ``failed``, ``tried``;
- ``candidate``: the screening ``kept`` or ``pruned`` a candidate: ``id``, ``status``,
  ``reward`` (None when unscored);
- ``document``: the assembler wrote the document: ``outputs`` (paths).

Read them with ``graph.stream(..., stream_mode="custom")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Emit = Callable[..., None]


def emitter(runtime: Any, **always: Any) -> Emit:
    """A function that sends ``emit(event, **fields)`` events, each with the ``always``
    fields that are not None; a no-op outside a stream."""
    writer = getattr(runtime, "stream_writer", None)
    always = {name: value for name, value in always.items() if value is not None}

    def emit(event: str, /, **fields: Any) -> None:
        if writer is not None:
            writer({"llmi": event, **always, **fields})

    return emit
