"""A sentence-transformers input module that embeds exactly as LlaraEncoder does.

LLaRA prompts are prefix + text + suffix, and queries and passages take different suffixes; plain
sentence-transformers prompts are prefixes only, and its Pooling has no "mean of the last 8 tokens".
So the exported folder names this module (``llara.integrations.sentence_transformers.LlaraModule``)
in its modules.json. It builds ids with llara's own PromptBuilder (only the text is truncated, so the
suffix survives), left-pads with real-token position ids, and runs llara's one embedding forward
(llara.modeling.embedder), hence the same numbers.

Which side a text takes: ``encode_query`` / ``encode_document`` (ST passes ``task``), or
``prompt_name="query" | "document"`` (the saved prompts are side markers, not text).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from sentence_transformers.base.modules import InputModule

from llara.modeling.config import CONFIG_NAME, DEFAULT_TEXT_CASE, ModelConfig
from llara.modeling.embedder import last_hidden_state, pool
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import Recipe, load_recipe
from llara.settings import PASSAGE_MAX_LENGTH, QUERY_MAX_LENGTH

# Saved as the model's ST prompts; preprocess() maps them back to a side and never prepends them.
SIDE_MARKERS = {"query": "<llara:query>", "document": "<llara:passage>"}
_MARKER_SIDE = {"<llara:query>": "query", "<llara:passage>": "passage"}
_TASK_SIDE = {"query": "query", "document": "passage", "passage": "passage", "corpus": "passage"}


class LlaraModule(InputModule):
    """HF causal LM + LLaRA recipe; outputs ``sentence_embedding`` (unnormalised; a Normalize module follows)."""

    config_file_name = CONFIG_NAME  # not config.json: that name belongs to the HF model in the same folder
    config_keys = ["recipe", "query_max_length", "passage_max_length", "text_case"]
    forward_kwargs = {"task"}

    def __init__(
        self,
        model,
        tokenizer,
        recipe: str | dict | Recipe = "reference",
        query_max_length: int = QUERY_MAX_LENGTH,
        passage_max_length: int = PASSAGE_MAX_LENGTH,
        training: tuple[dict, ...] = (),
        text_case: str = DEFAULT_TEXT_CASE,
    ) -> None:
        super().__init__()
        # not `self.training`: nn.Module's train/eval flag, which ST's .eval() sets to False
        self.training_stages = tuple(training)
        self.auto_model = model  # registered as a child, so ST's .to(device) moves it
        self.tokenizer = tokenizer
        self._recipe = load_recipe(recipe)  # a built-in name, recipe data (a user recipe) or a Recipe
        self.recipe = self._recipe.record()
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.text_case = text_case
        self.prompts = PromptBuilder(tokenizer, self._recipe, text_case)

    @property
    def max_seq_length(self) -> int:
        return self.passage_max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.passage_max_length = value

    @property
    def processor(self):
        return self.tokenizer

    def get_embedding_dimension(self) -> int:
        return self.auto_model.config.hidden_size

    def _side(self, prompt: str | None, task: str | None) -> str:
        if prompt:
            if prompt not in _MARKER_SIDE:
                raise ValueError(
                    f"LLaRA prompts are fixed by the {self._recipe.name!r} recipe; use prompt_name='query' or "
                    f"'document' (or encode_query / encode_document) instead of the prompt {prompt!r}"
                )
            return _MARKER_SIDE[prompt]
        if task is None:
            return "passage"
        if task not in _TASK_SIDE:
            raise ValueError(f"unknown task {task!r}; use 'query' or 'document'")
        return _TASK_SIDE[task]

    def preprocess(
        self, inputs: Sequence[str], prompt: str | None = None, task: str | None = None, **kwargs
    ) -> dict[str, torch.Tensor]:
        side = self._side(prompt, task)
        max_length = self.query_max_length if side == "query" else self.passage_max_length
        return self.prompts.pad(self.prompts.build(list(inputs), side, max_length))

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        inputs = {k: features[k] for k in ("input_ids", "attention_mask", "position_ids")}
        hidden = last_hidden_state(self.auto_model, inputs)
        features["token_embeddings"] = hidden
        features["sentence_embedding"] = pool(hidden.float(), features["attention_mask"], self._recipe)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.auto_model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(output_path)
        # llara's whole schema, not only ST's config_keys: the folder stays a llara model too.
        ModelConfig(
            self._recipe,
            self.query_max_length,
            self.passage_max_length,
            self.training_stages,
            text_case=self.text_case,
        ).save(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", model_kwargs: dict | None = None, **kwargs):
        from llara.modeling.loading import load_model

        folder = Path(model_name_or_path) / subfolder
        if not folder.is_dir():
            # Hub ids: let ST fetch the folder (only when the user asked for a hub id).
            folder = Path(
                cls.load_dir_path(
                    model_name_or_path,
                    subfolder=subfolder,
                    token=kwargs.get("token"),
                    cache_folder=kwargs.get("cache_folder"),
                    revision=kwargs.get("revision"),
                    local_files_only=kwargs.get("local_files_only", False),
                )
            )
        config = ModelConfig.of(folder)
        # fp32 unless the user asks otherwise (model_kwargs={"dtype": "bfloat16"}): exact parity with llara.
        dtype = (model_kwargs or {}).get("dtype") or (model_kwargs or {}).get("torch_dtype") or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, torch.float32)
        model, tokenizer = load_model(os.fspath(folder), dtype=dtype)
        return cls(
            model,
            tokenizer,
            config.recipe_spec,
            config.query_max_length,
            config.passage_max_length,
            config.training,
            config.text_case,
        )
