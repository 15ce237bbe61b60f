"""llmi: interleaved text-and-image documents, written by a language model that
chooses a tool for every image, as a LangGraph workflow."""

__version__ = "0.1.0"
