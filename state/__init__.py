"""Typed records and state schemas of the llmi graphs."""

from llmi.state.document import (
    DocumentInput,
    DocumentOutput,
    DocumentState,
    images_by_index,
    pending_requests,
)
from llmi.state.records import (
    Consistency,
    Finding,
    ImageRef,
    ImageRequest,
    ImageResult,
    Repair,
    Revision,
    Segment,
    Size,
    SlotSegment,
    Subject,
    TextSegment,
    failed_check,
    failed_result,
)
from llmi.state.reducers import merge_by_slot

__all__ = [
    "Consistency",
    "DocumentInput",
    "DocumentOutput",
    "DocumentState",
    "Finding",
    "ImageRef",
    "ImageRequest",
    "ImageResult",
    "Repair",
    "Revision",
    "Segment",
    "Size",
    "SlotSegment",
    "Subject",
    "TextSegment",
    "failed_check",
    "failed_result",
    "images_by_index",
    "merge_by_slot",
    "pending_requests",
]
