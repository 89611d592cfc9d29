"""An offline MTEB retrieval task over a local BEIR folder.

LlaraEncoder itself speaks MTEB 2's EncoderProtocol (``encode(DataLoader, prompt_type=...)``,
``similarity``, ``mteb_model_meta``); this module builds the task side. `mteb` is imported only
when a task is built.
"""

from __future__ import annotations

from pathlib import Path


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
