"""LlaraEncoder: the user-facing embedding API (sentence-transformers / BEIR / MTEB style)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llara.data.beir import format_document
from llara.errors import LlaraError
from llara.modeling.config import DEFAULT_RECIPE, DEFAULT_TEXT_CASE, ModelConfig
from llara.modeling.embedder import embed
from llara.modeling.loading import device_of_rank, load_model, model_fingerprint
from llara.modeling.precision import autocast_dtype
from llara.modeling.prompts import Passages, PromptBuilder, add_special_tokens
from llara.modeling.recipes import Recipe, load_recipe
from llara.settings import PASSAGE_MAX_LENGTH, QUERY_MAX_LENGTH

log = logging.getLogger(__name__)


def input_texts(inputs: Iterable) -> list[str]:
    """A list of strings from a list of strings, or from MTEB's DataLoader of ``{"text": [...]}`` batches."""
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and "text" in item:
            batch = item["text"]
            texts.extend([batch] if isinstance(batch, str) else batch)
        else:
            raise TypeError(f"cannot encode a {type(item).__name__}; pass strings (or MTEB text batches)")
    return texts


def _as_matrix(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    return t.unsqueeze(0) if t.ndim == 1 else t


def side_of(prompt_type) -> str:
    """Map MTEB's prompt_type / BEIR words to a prompt side."""
    value = getattr(prompt_type, "value", prompt_type)
    if value in (None, "passage", "document", "corpus", "doc"):
        return "passage"
    if value == "query":
        return "query"
    raise LlaraError(f"unknown prompt type {value!r}; use 'query' or 'passage'")


class LlaraEncoder:
    """Embeds queries and passages with a LLaRA recipe. Speaks the sentence-transformers / BEIR
    (`encode`, `encode_queries`, `encode_corpus`) and MTEB 2 (`encode(..., prompt_type=)`,
    `similarity`, `mteb_model_meta`) protocols.

    >>> enc = LlaraEncoder.from_pretrained("smollm2")  # doctest: +SKIP
    >>> enc.encode_queries(["what is dense retrieval?"]).shape  # doctest: +SKIP
    (1, 576)
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        recipe: str | os.PathLike | dict | Recipe = DEFAULT_RECIPE,
        query_max_length: int = QUERY_MAX_LENGTH,
        passage_max_length: int = PASSAGE_MAX_LENGTH,
        precision: str = "auto",
        device: str | torch.device | None = None,
        training: tuple[dict, ...] = (),
        text_case: str = DEFAULT_TEXT_CASE,
    ) -> None:
        self.recipe = load_recipe(recipe)  # a built-in name, a recipe file, recipe data or a Recipe
        self.training = tuple(training)  # the model's training stages, kept when it is saved again
        # HF samples new token rows at random: a fixed seed makes two loads (e.g. a resumed encode) agree.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            added = add_special_tokens(model, tokenizer, self.recipe)
        if added:
            log.warning(
                "added %d special tokens to the model; they are untrained until you run `llara pretrain`",
                len(self.recipe.special_tokens),
            )
        self.device = torch.device(device or device_of_rank())  # the one place that decides the device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, self.recipe, text_case)
        self.max_length = {"query": query_max_length, "passage": passage_max_length}
        self.precision = precision
        self.amp_dtype = autocast_dtype(precision, self.device)

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        recipe: str | os.PathLike | dict | Recipe | None = None,
        trust_remote_code: bool = False,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        text_case: str | None = None,
        **kwargs,
    ) -> LlaraEncoder:
        """`model`: a built-in name (``smollm2``), a GGUF file or a HF folder (llara's own included).

        The recipe, max lengths and text case (how a text in capitals only is read: "fold-capitals" or
        "as-given") come from the model's llara.json (what it was trained with);
        arguments that are not None override them. `recipe`: a built-in name or a .toml/.json recipe file."""
        config = ModelConfig.of(model).override(recipe, query_max_length, passage_max_length, text_case)
        hf_model, tokenizer = load_model(model, trust_remote_code=trust_remote_code)
        return cls(
            hf_model,
            tokenizer,
            recipe=config.recipe_spec,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
            training=config.training,
            text_case=config.text_case,
            **kwargs,
        )

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.model_config().save(path)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            self.recipe,
            self.max_length["query"],
            self.max_length["passage"],
            self.training,
            text_case=self.prompts.text_case,
        )

    def config(self) -> dict:
        """Recipe, lengths and text case, as recorded in metrics and index metadata (a user recipe in full)."""
        return {
            "recipe": self.recipe.record(),
            "query_max_length": self.max_length["query"],
            "passage_max_length": self.max_length["passage"],
            "text_case": self.prompts.text_case,
        }

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    # ---------------------------------------------------------------------------------- encoding
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        side: str | None = None,
        prompt_type=None,
        max_length: int | None = None,
        max_tokens_per_batch: int | None = None,
        **kwargs,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts; float32 [n, dim]. `side` (or MTEB's `prompt_type`) picks the query or the
        passage prompt; passages by default. Texts are run longest first in length-sorted batches
        (less padding) and returned in input order."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else input_texts(sentences)  # strings, or MTEB's DataLoader
        side = side or side_of(prompt_type)
        max_length = max_length or self.max_length[side]
        sequences = self.prompts.build(texts, side, max_length)
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        if show_progress_bar is None:
            show_progress_bar = len(texts) > 4 * batch_size and log.getEffectiveLevel() <= logging.INFO
        batches = list(self._batches(order, sequences, batch_size, max_tokens_per_batch))
        with tqdm(
            total=len(texts),
            desc="encode queries" if side == "query" else "encode passages",
            unit="text",
            disable=not show_progress_bar,
        ) as bar:
            for idx in batches:
                out[idx] = self._embed([sequences[i] for i in idx])
                bar.update(len(idx))
        if normalize_embeddings:
            out = torch.nn.functional.normalize(out, dim=-1)
        if single:
            out = out[0]
        return out.numpy() if convert_to_numpy else out

    @staticmethod
    def _batches(order, sequences, batch_size: int, max_tokens: int | None) -> Iterable[list[int]]:
        """Fixed-size batches, or batches under a token budget (rows x longest row) if given."""
        batch: list[int] = []
        for i in order:
            width = len(sequences[batch[0]]) if batch else len(sequences[i])
            too_many = len(batch) >= batch_size if not max_tokens else (len(batch) + 1) * width > max_tokens
            if batch and too_many:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    @torch.inference_mode()
    def _embed(self, sequences: list[list[int]]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in self.prompts.pad(sequences).items()}
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            return embed(self.model, inputs, self.recipe, normalize=False).cpu()

    def encode_queries(self, queries: Sequence[str], batch_size: int = 32, **kwargs) -> np.ndarray:
        """Queries take the EBAR ("predict the next passage") prompt."""
        return self.encode(queries, batch_size=batch_size, side="query", **kwargs)

    def encode_corpus(self, corpus: Sequence[dict | str], batch_size: int = 32, **kwargs) -> np.ndarray:
        """Documents (BEIR dicts with title/text, or strings) take the EBAE ("summarize") prompt."""
        return self.encode([format_document(d) for d in corpus], batch_size=batch_size, side="passage", **kwargs)

    def passages(
        self, docs: Sequence[dict | str], long_documents: str = "split", max_length: int | None = None
    ) -> Passages:
        """The passages `encode_documents` would embed for `docs` (tokenizing only): texts, owners, counts."""
        return self.prompts.passages(docs, max_length or self.max_length["passage"], split=long_documents == "split")

    def encode_documents(
        self,
        docs: Sequence[dict | str],
        long_documents: str = "split",
        batch_size: int = 32,
        max_length: int | None = None,
        **kwargs,
    ) -> tuple[np.ndarray, Passages]:
        """Documents as passages: (embeddings [passages, dim], the `Passages`: `.owner[i]` is the index of
        the document passage i comes from, with counts of long documents). `long_documents="split"` (the
        default) reads a document longer than the passage length in overlapping passages, each embedded
        (`PromptBuilder.passages`); a search scores the document by its best passage (MaxP). "truncate":
        one passage a document, its first tokens."""
        max_length = max_length or self.max_length["passage"]
        passages = self.passages(docs, long_documents, max_length)
        emb = self.encode(passages.texts, batch_size=batch_size, side="passage", max_length=max_length, **kwargs)
        return emb, passages

    # ------------------------------------------------------------------------------------- MTEB
    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """Cosine similarity matrix (what the retriever scores with: embeddings are L2-normalised)."""
        a = torch.nn.functional.normalize(_as_matrix(embeddings1), dim=-1)
        b = torch.nn.functional.normalize(_as_matrix(embeddings2), dim=-1)
        return a @ b.T

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        a = torch.nn.functional.normalize(_as_matrix(embeddings1), dim=-1)
        b = torch.nn.functional.normalize(_as_matrix(embeddings2), dim=-1)
        return (a * b).sum(-1)

    @property
    def mteb_model_meta(self):
        """MTEB's model metadata (mteb is imported only when MTEB asks for it)."""
        from mteb.models.model_meta import ModelMeta

        source = Path(str(getattr(self.model.config, "name_or_path", "") or "model")).name or "model"
        return ModelMeta.create_empty(
            {
                "name": f"llara/{source}-{self.recipe.name}",
                "revision": self.fingerprint(),
                "embed_dim": self.dim,
                "max_tokens": self.max_length["passage"],
                "similarity_fn_name": "cosine",
                "framework": ["PyTorch"],
                "open_weights": True,
            }
        )
