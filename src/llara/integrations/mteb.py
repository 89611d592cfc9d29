"""What LlaraEncoder needs to satisfy MTEB's EncoderProtocol (mteb >= 2), and an offline MTEB task.

MTEB 2 calls ``encode(DataLoader of {"text": [...]} batches, task_metadata=..., hf_split=...,
hf_subset=..., prompt_type=PromptType.query | document)``, scores with ``similarity`` and reads
``mteb_model_meta``. `mteb` itself is imported only when MTEB asks for the metadata or a task is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


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


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    return t.unsqueeze(0) if t.ndim == 1 else t


class MTEBEncoderMixin:
    """Cosine similarity (embeddings are L2-normalised, so the inner product) and MTEB model metadata."""

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        a = torch.nn.functional.normalize(_as_tensor(embeddings1), dim=-1)
        b = torch.nn.functional.normalize(_as_tensor(embeddings2), dim=-1)
        return a @ b.T

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        a = torch.nn.functional.normalize(_as_tensor(embeddings1), dim=-1)
        b = torch.nn.functional.normalize(_as_tensor(embeddings2), dim=-1)
        return (a * b).sum(-1)

    @property
    def mteb_model_meta(self):
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


def beir_retrieval_task(folder: str | Path, name: str = "LlaraBeirRetrieval", split: str = "test"):
    """An MTEB retrieval task over a local BEIR folder (read with llara's own validating reader): no hub,
    no network. E.g. ``beir_retrieval_task(llara.data.arxiv.write_arxiv_beir(dir))`` for the shipped arXiv set."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    from llara.data.beir import load_beir

    data = load_beir(folder, split)
    corpus = Dataset.from_list(
        [{"id": d, "title": doc.get("title") or "", "text": doc.get("text") or ""} for d, doc in data.corpus.items()]
    )
    queries = Dataset.from_list([{"id": q, "text": t} for q, t in data.queries.items() if q in data.qrels])
    split_data = RetrievalSplitData(corpus=corpus, queries=queries, relevant_docs=data.qrels, top_ranked=None)

    class LocalBeirTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name,
            description=f"BEIR folder {Path(folder).name}, loaded locally by llara.",
            reference=None,
            dataset={"path": str(folder), "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=[split],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation=None,
        )

        def load_data(self, **kwargs) -> None:
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    return LocalBeirTask()
