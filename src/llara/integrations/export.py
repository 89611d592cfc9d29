"""Export a llara model to a folder other tools load directly.

- ``hf``: a plain Hugging Face folder (safetensors, LoRA already merged by `load_model`, tokenizer
  with the recipe's special tokens, ``llara.json`` with the recipe and lengths).
- ``sentence-transformers``: the same folder plus modules.json / config_sentence_transformers.json,
  so ``SentenceTransformer(DIR, trust_remote_code=True)`` embeds exactly as llara does (see st_module).

The folder is built under a temporary name beside the target and renamed into place, so a killed
export never leaves a half-written model under the final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from llara import settings
from llara.data.io import atomic_dir
from llara.errors import LlaraError
from llara.settings import option

_README = """# {name}

A LLaRA dense retriever exported by llara (recipe `{recipe}`; queries up to {q} tokens, passages up to {p}).
Queries take the EBAR prompt, passages the EBAE prompt; embeddings are L2-normalised, score = inner product.

```python
{usage}
```

A document longer than {p} tokens is read by llara in passages of {p} tokens, a quarter of each shared
with the next, its title in each; each passage is embedded and the document scores its best passage
(MaxP). `LlaraEncoder.from_pretrained("{path}").passages(docs)` gives those passages' texts and the
document each comes from, to embed with any loader of this folder.
"""

_USAGE = {
    "hf": """from llara import LlaraEncoder

encoder = LlaraEncoder.from_pretrained("{path}")
scores = encoder.encode_queries(["a query"]) @ encoder.encode_corpus(["a passage"]).T""",
    "sentence-transformers": """from sentence_transformers import SentenceTransformer

# trust_remote_code: sentence-transformers >= 6 asks it for any module class outside its own package;
# the class is llara.integrations.sentence_transformers.LlaraModule from the installed llara;
# nothing is read from this folder.
model = SentenceTransformer("{path}", trust_remote_code=True)
scores = model.encode_query(["a query"]) @ model.encode_document(["a passage"]).T""",
}


class ExportFormat(StrEnum):
    hf = "hf"
    sentence_transformers = "sentence-transformers"


FORMATS = tuple(f.value for f in ExportFormat)


@dataclass(frozen=True)
class ExportOptions:
    """What `llara export` takes."""

    output: Path | None = option(None, "folder to write (built under a temporary name, then renamed)", required=True)
    model: str = settings.model()
    format: ExportFormat = option(ExportFormat.hf, "hf (plain HF folder) or sentence-transformers")
    recipe: str | None = settings.recipe()
    overwrite: bool = option(False, "replace an existing non-empty OUTPUT")
    trust_remote_code: bool = settings.trust_remote_code()


def check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise LlaraError("exists and is not a folder", output)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise LlaraError("folder exists and is not empty; pass --overwrite to replace it", output)


def require_sentence_transformers() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("sentence-transformers").split(".")[0])
    except PackageNotFoundError:
        major = 0
    if major < 6:
        raise LlaraError(
            "the sentence-transformers format needs sentence-transformers >= 6: pip install 'sentence-transformers>=6'"
        )


def write_folder(encoder, folder: Path, fmt: str) -> None:
    """Write `encoder` into an existing empty folder in the given format."""
    # Left padding is what llara's pooling assumes; a user batching with the HF tokenizer gets it too.
    encoder.tokenizer.padding_side = "left"
    encoder.tokenizer.init_kwargs["padding_side"] = "left"  # what save_pretrained writes to tokenizer_config
    if fmt == "hf":
        encoder.save_pretrained(folder)
    else:
        require_sentence_transformers()
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules import Normalize

        from llara.integrations.sentence_transformers import SIDE_MARKERS, LlaraModule

        module = LlaraModule(encoder.model, encoder.tokenizer, **encoder.config(), training=encoder.training)
        st = SentenceTransformer(
            modules=[module, Normalize()], prompts=dict(SIDE_MARKERS), similarity_fn_name="cosine", device="cpu"
        )
        st.save(os.fspath(folder), create_model_card=False)
    cfg = encoder.config()
    usage = _USAGE[fmt].format(path=folder.name)
    readme = _README.format(
        name=folder.name,
        recipe=encoder.recipe.name,
        q=cfg["query_max_length"],
        p=cfg["passage_max_length"],
        usage=usage,
        path=folder.name,
    )
    (folder / "README.md").write_text(readme, encoding="utf-8")


def export_encoder(encoder, output: str | os.PathLike, fmt: str = "hf", overwrite: bool = False) -> Path:
    """Write a loaded LlaraEncoder to `output` atomically (temp folder beside it, then rename)."""
    if fmt not in FORMATS:
        raise LlaraError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output = Path(output)
    check_output(output, overwrite)
    with atomic_dir(output) as tmp:
        write_folder(encoder, tmp, fmt)
        # README's usage names the final folder, not the temporary one.
        readme = tmp / "README.md"
        readme.write_text(readme.read_text(encoding="utf-8").replace(tmp.name, output.name), encoding="utf-8")
    return output


def export(
    model: str | os.PathLike,
    output: str | os.PathLike,
    fmt: str = "hf",
    recipe: str | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    **encoder_kwargs,
) -> Path:
    """Load `model` (built-in name, GGUF, HF folder or LoRA adapter folder, merged) and export it."""
    from llara.inference.encoder import LlaraEncoder

    if fmt not in FORMATS:
        raise LlaraError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_output(Path(output), overwrite)  # before the (slow) load
    if fmt == "sentence-transformers":
        require_sentence_transformers()
    encoder = LlaraEncoder.from_pretrained(
        model, recipe=recipe, trust_remote_code=trust_remote_code, precision="fp32", device="cpu", **encoder_kwargs
    )
    return export_encoder(encoder, output, fmt, overwrite)
