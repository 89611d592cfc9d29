"""llara: turn any decoder-only LLM into a dense retriever with LLaRA (EBAE + EBAR)."""

from llara.errors import LlaraError
from llara.version import __version__

__all__ = ["LlaraEncoder", "LlaraError", "__version__"]


def __getattr__(name: str):
    # Keep `import llara` cheap (no torch import) until the encoder is actually asked for.
    if name == "LlaraEncoder":
        from llara.inference.encoder import LlaraEncoder

        return LlaraEncoder
    raise AttributeError(name)
