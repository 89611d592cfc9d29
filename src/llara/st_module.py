"""The module path that folders exported by llara 0.1 name in their modules.json; it stays loadable."""

from llara.integrations.sentence_transformers import LlaraModule  # noqa: F401
