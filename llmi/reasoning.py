"""A chat model's reply, split into its reasoning and its answer.

Reasoning models hand back their thinking in several forms, depending on the model's
chat template and the server:

- a ``<think>...</think>`` block in the content, anywhere in it (a server without a
  reasoning parser; some replies have text before the block);
- only the closing ``</think>``: the DeepSeek-R1 and Qwen3-Thinking chat templates put
  the opening tag in the prompt, so the content starts inside the reasoning;
- an unclosed ``<think>``: the reply ended, usually at its token limit, while reasoning;
- a field of its own beside the content, which is then empty or null:
  ``reasoning_content`` (DeepSeek's API, SGLang and vLLM with a reasoning parser,
  llama.cpp's server with ``--reasoning-format deepseek``) or ``reasoning`` (vLLM 0.11
  and later, Ollama). ``llmi.models`` keeps either in the message's
  ``additional_kwargs["reasoning_content"]``, where LangChain's provider packages put it.

Only the answer is the model's output: reasoning is never part of a document, never
decides a tool call or a score. One exception shows while a reply streams: text before a
bare ``</think>`` reads as answer until that tag arrives (``AnswerStream``'s restart), so a
tag in it may start its tool early (``llmi.tools.early``), whose image no document uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from langchain_core.messages import BaseMessage

OPEN, CLOSE = "<think>", "</think>"
_REASONING_KEYS = ("reasoning_content", "reasoning")
_REASONING_BLOCKS = ("reasoning", "thinking")


@dataclass(frozen=True)
class Reply:
    """What a model's reply holds."""

    answer: str
    reasoning: str
    cut_off: bool
    """The server stopped the reply at its token limit (``finish_reason`` "length")."""
    unfinished: bool
    """The reply ended inside its reasoning: a ``<think>`` block was never closed."""


class NoAnswer(ValueError):
    """A reply that holds no answer: empty, only reasoning, or cut off while reasoning."""


def split_reply(reply: BaseMessage | str) -> Reply:
    """The answer, reasoning and ending of a chat message, or of a completion's text."""
    if isinstance(reply, str):
        text, fields, cut_off = reply, [], False
    else:
        text, fields, cut_off = reply.text, _reasoning_fields(reply), _cut_off(reply)
    answer, reasoning, unfinished = _split_text(text)
    return Reply(
        answer=answer,
        reasoning="\n\n".join(part for part in [*fields, reasoning] if part),
        cut_off=cut_off,
        unfinished=unfinished,
    )


def answer_of(reply: BaseMessage | str, *, who: str, limit: str) -> str:
    """The answer of ``who``'s reply; NoAnswer says why there is none.

    ``limit`` names the setting of ``who``'s maximum output tokens, to raise when the
    token limit cut the reply before its answer.
    """
    split = split_reply(reply)
    if split.unfinished or not split.answer:
        raise NoAnswer(no_answer_reason(split, who=who, limit=limit))
    return split.answer


def no_answer_reason(split: Reply, *, who: str, limit: str) -> str:
    if split.cut_off and (split.unfinished or split.reasoning):
        return (f"{who}'s reply was cut off by its token limit while reasoning, before any "
                f"answer: raise {limit}")
    if split.cut_off:
        return f"{who}'s reply was cut off by its token limit before any answer: raise {limit}"
    if split.unfinished:
        return f"{who}'s reply ended inside its reasoning (a <think> never closed), before any answer"
    if split.reasoning:
        return f"{who}'s reply holds reasoning but no answer after it"
    return f"{who}'s reply is empty"


def cut_off_note(who: str, limit: str) -> str:
    """What to say of an answer the token limit cut short."""
    return f"{who}'s reply was cut off by its token limit, so its answer may be incomplete: raise {limit}"


def _split_text(text: str) -> tuple[str, str, bool]:
    """(answer, reasoning, unfinished) of a reply's content."""
    answer: list[str] = []
    reasoning: list[str] = []
    close, open_ = text.find(CLOSE), text.find(OPEN)
    if close != -1 and (open_ == -1 or close < open_):
        # The chat template opened the block in the prompt: the content starts inside it.
        reasoning.append(text[:close])
        text = text[close + len(CLOSE):]
    while (start := text.find(OPEN)) != -1:
        answer.append(text[:start])
        end = text.find(CLOSE, start)
        if end == -1:
            reasoning.append(text[start + len(OPEN):])
            return _joined(answer), _joined(reasoning), True
        reasoning.append(text[start + len(OPEN):end])
        text = text[end + len(CLOSE):]
    answer.append(text)
    return _joined(answer), _joined(reasoning), False


class Delta(NamedTuple):
    """What a piece of streamed content adds to the answer."""

    text: str
    restart: bool = False
    """The text before this piece was reasoning after all: the content ended a block whose
    ``<think>`` the chat template put in the prompt. The answer starts again with ``text``."""


class AnswerStream:
    """The answer of a reply whose content arrives in pieces, as far as it is known yet.

    ``feed`` takes each piece of the content and returns the answer text it makes known;
    ``end`` returns what was held back. Reasoning in ``<think>`` blocks is left out, as
    ``split_reply`` leaves it out; a text that may be the start of a tag is held back until
    the next piece tells. The pieces are for showing: the answer of the whole reply is
    ``split_reply``'s, which also trims the text around blocks.
    """

    def __init__(self) -> None:
        self._held = ""
        self._inside = False
        self._opened = False
        """A ``<think>`` was seen, so a later ``</think>`` no longer ends a prompt's block."""

    def feed(self, piece: str) -> Delta:
        text, shown, restart = self._held + piece, [], False
        self._held = ""
        while text:
            if self._inside:
                end = text.find(CLOSE)
                if end == -1:
                    self._held = _tag_start(text, (CLOSE,))
                    break
                self._inside, text = False, text[end + len(CLOSE):]
                continue
            start, close = text.find(OPEN), text.find(CLOSE)
            if close != -1 and not self._opened and (start == -1 or close < start):
                shown, restart, self._opened = [], True, True
                text = text[close + len(CLOSE):]
                continue
            if start == -1:
                self._held = _tag_start(text, (OPEN, *(() if self._opened else (CLOSE,))))
                shown.append(text[:len(text) - len(self._held)])
                break
            shown.append(text[:start])
            self._inside = self._opened = True
            text = text[start + len(OPEN):]
        return Delta("".join(shown), restart)

    def end(self) -> str:
        """The text held back at the end of the content: answer, unless inside a block."""
        held, self._held = self._held, ""
        return "" if self._inside else held


def _tag_start(text: str, tags: tuple[str, ...]) -> str:
    """The longest end of ``text`` that is the start of one of ``tags``."""
    for size in range(min(len(text), max(map(len, tags)) - 1), 0, -1):
        if any(tag.startswith(text[-size:]) for tag in tags):
            return text[-size:]
    return ""


def _joined(parts: list[str]) -> str:
    return "\n\n".join(part.strip() for part in parts if part.strip())


def _reasoning_fields(message: BaseMessage) -> list[str]:
    extra = message.additional_kwargs
    fields = [extra[key] for key in _REASONING_KEYS if isinstance(extra.get(key), str)]
    if isinstance(message.content, list):
        fields += [_block_text(block) for block in message.content
                   if isinstance(block, dict) and block.get("type") in _REASONING_BLOCKS]
    return [field.strip() for field in fields if field and field.strip()]


def _block_text(block: dict[str, Any]) -> str:
    text = block.get("reasoning") or block.get("thinking") or block.get("text") or ""
    return text if isinstance(text, str) else ""


def _cut_off(message: BaseMessage) -> bool:
    meta = message.response_metadata
    return (meta.get("finish_reason") == "length" or meta.get("done_reason") == "length"
            or meta.get("stop_reason") == "max_tokens")
