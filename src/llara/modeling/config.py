"""llara.json: how a model encodes and what it was trained on, saved beside its HF weights.

One schema, written by every command that saves a model (pretrain, finetune, their checkpoints,
export, `LlaraEncoder.save_pretrained`) and read by every command that loads one, so a model encodes
the way it was saved: at the lengths its llara.json records unless a command-line flag says otherwise
(fine-tuning records its training lengths where they are longer than the model's, never shorter).

    {"recipe": "reference", "pooling": "last-8", "query_max_length": 256, "passage_max_length": 256,
     "text_case": "fold-capitals",
     "recipe_spec": {"name": "reference", "passage": "...", "query": "...", ...},
     "training": [{"stage": "pretrain", ...}, {"stage": "finetune", ...}], "llara_version": "0.1.0",
     "fusion": {"corpus_sha256": "...", "method": "auto", "weight": 0.3, "evidence": {...}, ...}}

"fusion", where present, is the hybrid `llara pipeline` chose for the model on its corpus without labels
(llara.calibration.record_fusion); `llara search` and `llara serve` over the same corpus use it.

"text_case" is how a text in capitals only is read (llara.modeling.prompts.read_case); a llara.json without
it was written before the setting, by a model that read every text as written ("as-given").

"recipe_spec" is the whole recipe (llara.modeling.recipes' file format), so a model trained with a user's
recipe file encodes the same way without that file. Folders written by earlier llara versions (no
recipe_spec, only a built-in's name; lengths nested under "finetune", or none at all) still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from llara.errors import LlaraError
from llara.modeling.recipes import BUILTIN_RECIPES, Recipe, builtin_recipe, load_recipe
from llara.settings import PASSAGE_MAX_LENGTH, QUERY_MAX_LENGTH, TEXT_CASES
from llara.version import __version__

CONFIG_NAME = "llara.json"
DEFAULT_RECIPE = "reference"
# A text in capitals only is read in lower case (TIME at 12 + 12: dense 0.186 -> 0.575, benchmarks/RESULTS.md).
DEFAULT_TEXT_CASE = "fold-capitals"


@dataclass(frozen=True)
class ModelConfig:
    # Given: anything `load_recipe` takes (a built-in name, a recipe file, recipe data, a Recipe).
    # Held: the recipe's name here, the recipe itself in `recipe_spec`.
    recipe: str = DEFAULT_RECIPE
    query_max_length: int = QUERY_MAX_LENGTH  # why these lengths: llara.settings
    passage_max_length: int = PASSAGE_MAX_LENGTH
    training: tuple[dict, ...] = ()  # the training stages, oldest first: {"stage": "pretrain" | "finetune", ...}
    llara_version: str = field(default=__version__)
    recipe_spec: Recipe | None = None  # filled in from `recipe` unless it already is the recipe of that name
    # `--fusion auto`'s choice for this model on a corpus, with its evidence (llara.calibration.record_fusion)
    fusion: dict | None = None
    text_case: str = DEFAULT_TEXT_CASE  # one of settings.TEXT_CASES

    def __post_init__(self) -> None:
        if self.text_case not in TEXT_CASES:
            raise LlaraError(f"unknown text case {self.text_case!r}; expected one of: {', '.join(TEXT_CASES)}")
        object.__setattr__(self, "text_case", str(self.text_case))  # a TextCase from the command line: its value
        spec = self.recipe_spec
        # A name equal to the held recipe's keeps it (a saved user recipe needs no file); else resolve anew.
        if not (isinstance(self.recipe, str) and spec is not None and spec.name == self.recipe):
            spec = load_recipe(self.recipe)
        object.__setattr__(self, "recipe", spec.name)
        object.__setattr__(self, "recipe_spec", spec)

    @property
    def pooling(self) -> str:
        r = self.recipe_spec
        return "mean" if r.pooling == "mean" else f"last-{r.pool_tokens}"

    def to_dict(self) -> dict:
        return {
            "recipe": self.recipe,
            "pooling": self.pooling,
            "recipe_spec": self.recipe_spec.to_dict(),
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "text_case": self.text_case,
            "training": list(self.training),
            "llara_version": self.llara_version,
        } | ({"fusion": self.fusion} if self.fusion else {})

    def trained(self, stage: dict, **changes) -> ModelConfig:
        """This config after one more training stage (and any changed settings), by this llara."""
        # a new model: the old one's fusion choice is not its
        return replace(self, training=(*self.training, stage), llara_version=__version__, fusion=None, **changes)

    def override(self, recipe: str | Recipe | None = None, query_max_length: int | None = None,
                 passage_max_length: int | None = None, text_case: str | None = None) -> ModelConfig:  # fmt: skip
        """Explicit settings (command-line flags) win over the saved ones; None keeps the saved one."""
        given = {
            "recipe": recipe,
            "query_max_length": query_max_length,
            "passage_max_length": passage_max_length,
            "text_case": text_case,
        }
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> ModelConfig:
        if not isinstance(data, dict):
            raise LlaraError("expected a JSON object", path)
        nested = data.get("finetune") if isinstance(data.get("finetune"), dict) else {}
        training = data.get("training")
        if training is None:  # written before the schema: a pretrain record at the top, a finetune one nested
            training = []
            if data.get("stage") == "pretrain":
                keys = ("base_model", "chunk_tokens", "lm_loss")
                training.append({"stage": "pretrain", **{k: data[k] for k in keys if k in data}})
            if nested:
                training.append({"stage": "finetune", **nested})
        if not isinstance(training, list) or not all(isinstance(s, dict) for s in training):
            raise LlaraError("expected a list of objects", path, None, "training")
        values = {}
        for key, default in (
            ("query_max_length", QUERY_MAX_LENGTH),
            ("passage_max_length", PASSAGE_MAX_LENGTH),
        ):
            value = data.get(key, nested.get(key, default))
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LlaraError(f"expected a positive integer, got {value!r}", path, None, key)
            values[key] = value
        recipe = data.get("recipe", DEFAULT_RECIPE)
        if not isinstance(recipe, str):
            raise LlaraError(f"expected a recipe name, got {recipe!r}", path, None, "recipe")
        if data.get("recipe_spec") is not None:  # the recipe itself, validated as a recipe file is
            spec = Recipe.from_dict(data["recipe_spec"], path, prefix="recipe_spec.")
            if spec.name != recipe:
                raise LlaraError(f"names the recipe {recipe!r}, but recipe_spec is {spec.name!r}", path, None, "recipe")
        elif recipe in BUILTIN_RECIPES:  # written before recipes were saved whole: a built-in's name
            spec = builtin_recipe(recipe)
        else:
            raise LlaraError(
                f"unknown recipe {recipe!r} and no recipe_spec; built-in recipes: {', '.join(BUILTIN_RECIPES)}",
                path,
                None,
                "recipe",
            )
        version = data.get("llara_version", "")
        fusion = data.get("fusion")
        if fusion is not None and not isinstance(fusion, dict):
            raise LlaraError(f"expected an object, got {fusion!r}", path, None, "fusion")
        text_case = data.get("text_case", "as-given")  # absent: written before the setting, read as written
        if text_case not in TEXT_CASES:
            raise LlaraError(f"expected one of {', '.join(TEXT_CASES)}, got {text_case!r}", path, None, "text_case")
        return cls(
            recipe=recipe,
            text_case=text_case,
            training=tuple(training),
            llara_version=str(version),
            recipe_spec=spec,
            fusion=fusion,
            **values,
        )

    @classmethod
    def load(cls, folder: str | Path) -> ModelConfig | None:
        """The folder's llara.json, or None when it has none (a plain HF model, a GGUF file, a built-in)."""
        path = Path(str(folder)) / CONFIG_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LlaraError(f"not valid JSON: {e}", path) from None
        return cls.from_dict(data, path)

    @classmethod
    def of(cls, model: str | Path) -> ModelConfig:
        """The saved config of a model, or the defaults."""
        return cls.load(model) or cls()

    def save(self, folder: str | Path) -> Path:
        from llara.data.io import write_json

        path = Path(folder) / CONFIG_NAME
        write_json(path, self.to_dict())
        return path
