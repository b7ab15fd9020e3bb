"""modelserve: an OpenAI-compatible torch server with vLLM-compatible metrics."""

__version__ = "0.1.0"
