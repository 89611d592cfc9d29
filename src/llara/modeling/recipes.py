"""Recipes are data: how a text becomes a prompt, and which hidden states make its embedding.

A recipe is a TOML or JSON file. The built-in ones ship in ``builtin_recipes/`` beside this module and
go through the same loader and validation as a user's file::

    name = "instruct"
    passage = "{text}{eos}"
    query = "Instruct: {instruction}\\nQuery: {text}{eos}"
    instruction = "Given a title, retrieve the paper's abstract"
    pooling = "last"       # "last" (mean over the last `pool_tokens` tokens) or "mean" (all real tokens)
    pool_tokens = 1
    special_tokens = []    # tokens added to the tokenizer (and the embeddings) before use
    bos = true             # prefix tokenised with the tokenizer's own special tokens (BOS on LLaMA)

Placeholders: ``{text}`` (exactly once per template; what comes before it is the prefix, what comes
after it the suffix, and only the text is truncated), ``{eos}`` (the tokenizer's end-of-sequence token)
and ``{instruction}`` (the ``instruction`` field). Passages take the ``passage`` template (EBAE side),
queries the ``query`` one (EBAR side). `load_recipe` takes a built-in name, a file path, the data of a
recipe (as saved in llara.json or an index's meta.json) or a Recipe, and always returns a Recipe.

Nothing here imports torch: llara.json is read without it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from llara.errors import LlaraError

BUILTIN_RECIPES = ("reference", "paper", "repllama", "mean")
BUILTIN_DIR = "builtin_recipes"
SUFFIXES = (".toml", ".json")
POOLINGS = ("last", "mean")

TEXT, EOS, INSTRUCTION = "{text}", "{eos}", "{instruction}"
PLACEHOLDERS = ("text", "eos", "instruction")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
_NAME = re.compile(r"[A-Za-z0-9_][\w.+-]*")
SIDES = ("passage", "query")  # passage = EBAE prompt, query = EBAR prompt

# Every field a recipe file may set: (type, required). Anything else is refused.
FIELDS: dict[str, tuple[type, bool]] = {
    "name": (str, False),  # default: the file's stem
    "description": (str, False),
    "passage": (str, True),
    "query": (str, True),
    "instruction": (str, False),
    "special_tokens": (list, False),
    "pooling": (str, True),
    "pool_tokens": (int, False),  # "last": default 1; "mean": 0 or absent
    "bos": (bool, False),  # default true
}


@dataclass(frozen=True)
class Recipe:
    """One validated recipe. Build it with `load_recipe` (which validates); `to_dict` gives its data back."""

    name: str
    passage: str  # template with {text}
    query: str
    pooling: str  # "last": mean over the last `pool_tokens` positions; "mean": over all real tokens
    pool_tokens: int
    special_tokens: tuple[str, ...] = ()
    # Tokenise the prefix WITH the tokenizer's own special tokens, as the reference code does
    # (`tokenizer('"')`): on LLaMA-2/Mistral/LLaMA-3 every sequence then starts with BOS.
    bos: bool = True
    instruction: str = ""
    description: str = ""
    source: str | None = field(default=None, compare=False, repr=False)  # the file it came from, for errors

    def template(self, side: str) -> str:
        """The side's template with the instruction filled in ({text} and {eos} stay)."""
        return (self.passage if side == "passage" else self.query).replace(INSTRUCTION, self.instruction)

    def prefix(self, side: str) -> str:
        return self.template(side).partition(TEXT)[0]

    def suffix(self, side: str) -> str:
        return self.template(side).partition(TEXT)[2]

    @property
    def builtin(self) -> bool:
        """True when this is a built-in recipe exactly as llara ships it."""
        return self.name in BUILTIN_RECIPES and builtin_recipe(self.name) == self

    def to_dict(self) -> dict[str, Any]:
        """The recipe's data, in the recipe-file format (what llara.json saves under "recipe_spec")."""
        return {
            "name": self.name,
            "description": self.description,
            "passage": self.passage,
            "query": self.query,
            "instruction": self.instruction,
            "special_tokens": list(self.special_tokens),
            "pooling": self.pooling,
            "pool_tokens": self.pool_tokens,
            "bos": self.bos,
        }

    def record(self) -> str | dict[str, Any]:
        """How metadata (index meta.json, embedding manifests, metrics) records this recipe: a built-in's
        name, or the whole data of any other recipe, so it can be rebuilt without its file."""
        return self.name if self.builtin else self.to_dict()

    @classmethod
    def from_dict(
        cls, data: Any, path: str | os.PathLike | None = None, default_name: str | None = None, prefix: str = ""
    ) -> Recipe:
        """Validate recipe data. Errors name `path` and the field (`prefix` + field, e.g. "recipe_spec.query")."""

        def fail(message: str, key: str | None = None) -> LlaraError:
            return LlaraError(message, path, None, f"{prefix}{key}" if key else (prefix.rstrip(".") or None))

        if not isinstance(data, Mapping):
            raise fail(f"a recipe is a table of fields, got {type(data).__name__}")
        for key in data:
            if key not in FIELDS:
                raise fail(f"unknown field; a recipe has the fields {', '.join(FIELDS)}", key)
        for key, (kind, required) in FIELDS.items():
            if key not in data:
                if required:
                    raise fail("missing (required)", key)
                continue
            value = data[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                names = {str: "a string", list: "a list of strings", int: "an integer", bool: "true or false"}
                raise fail(f"expected {names[kind]}, got {value!r}", key)

        name = data.get("name", default_name)
        if name is None:
            raise fail("missing (required)", "name")
        if not _NAME.fullmatch(name) or name.lower().endswith(SUFFIXES):
            raise fail(f"{name!r} is not a recipe name: use letters, digits, '_', '-', '.', not a file name", "name")

        instruction = data.get("instruction", "")
        special = data.get("special_tokens", [])
        for i, tok in enumerate(special):
            if not isinstance(tok, str) or not tok.strip() or tok != tok.strip():
                raise fail(f"item {i}: expected a token without surrounding spaces, got {tok!r}", "special_tokens")
        if len(set(special)) != len(special):
            raise fail("lists a token twice", "special_tokens")

        uses_instruction = False
        for side in SIDES:
            template = data[side]
            for found in _PLACEHOLDER.findall(template):
                if found not in PLACEHOLDERS:
                    raise fail(f"unknown placeholder {{{found}}}; use {{text}}, {{eos}} or {{instruction}}", side)
            count = template.count(TEXT)
            if count != 1:
                where = "missing the {text} placeholder" if count == 0 else f"has {count} {{text}} placeholders"
                raise fail(f"{where}: a template is prefix + {{text}} + suffix, e.g. 'query: {{text}}{{eos}}'", side)
            uses_instruction |= INSTRUCTION in template
        if uses_instruction and not instruction:
            raise fail("a template uses {instruction} but the recipe gives no instruction", "instruction")
        if instruction and not uses_instruction:
            raise fail("is given but neither template uses the {instruction} placeholder", "instruction")
        for tok in special:
            if not any(tok in data[side] for side in SIDES):
                raise fail(f"{tok!r} appears in neither template", "special_tokens")

        pooling = data["pooling"]
        if pooling not in POOLINGS:
            raise fail(f"unknown pooling {pooling!r}; choose 'last' (with pool_tokens) or 'mean'", "pooling")
        if pooling == "mean":
            pool_tokens = data.get("pool_tokens", 0)
            if pool_tokens != 0:
                raise fail("mean pooling averages every token; leave pool_tokens out (or 0)", "pool_tokens")
        else:
            pool_tokens = data.get("pool_tokens", 1)
            if pool_tokens < 1:
                raise fail(f"'last' pooling needs at least 1 token, got {pool_tokens}", "pool_tokens")
            for side in SIDES:
                suffix = data[side].replace(INSTRUCTION, instruction).partition(TEXT)[2]
                most = _most_tokens(suffix, special)
                if pool_tokens > most:
                    what = "nothing" if not most else f"at most {most} token{'s' * (most > 1)}"
                    raise fail(
                        f"pools the last {pool_tokens} tokens, but the {side} template has {what} after {{text}}; "
                        "pooled tokens must come after the text (they are never truncated)",
                        "pool_tokens",
                    )
        return cls(
            name=name,
            passage=data["passage"],
            query=data["query"],
            pooling=pooling,
            pool_tokens=pool_tokens,
            special_tokens=tuple(special),
            bos=data.get("bos", True),
            instruction=instruction,
            description=data.get("description", ""),
            source=os.fspath(path) if path is not None else None,
        )


def _most_tokens(suffix: str, special: list[str]) -> int:
    """An upper bound on the tokens of a suffix on any tokenizer: one per special token and {eos}, at most
    one per byte of other text, plus one for a tokenizer's leading-space marker."""
    count = 0
    for tok in sorted(special, key=len, reverse=True):
        count += suffix.count(tok)
        suffix = suffix.replace(tok, "\0")
    count += suffix.count(EOS)
    rest = suffix.replace(EOS, "").replace("\0", "")
    return count + (len(rest.encode("utf-8")) + 1 if rest else 0)


def read_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate one recipe file (.toml or .json); its name defaults to the file's stem."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise LlaraError("a recipe file must end in .toml or .json", path)
    if not path.is_file():
        raise LlaraError("no such recipe file", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LlaraError(f"cannot read the recipe file: {e}", path) from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise LlaraError(f"not valid TOML: {e}", path) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LlaraError(f"not valid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    return Recipe.from_dict(data, path, default_name=path.stem)


_BUILTINS: dict[str, Recipe] = {}


def builtin_recipe(name: str) -> Recipe:
    """A built-in recipe, read from the file llara ships (once per process)."""
    if name not in _BUILTINS:
        if name not in BUILTIN_RECIPES:
            raise LlaraError(f"unknown built-in recipe {name!r}; choose one of {', '.join(BUILTIN_RECIPES)}")
        with resources.as_file(resources.files("llara.modeling") / BUILTIN_DIR / f"{name}.toml") as path:
            _BUILTINS[name] = read_recipe(path)
    return _BUILTINS[name]


def load_recipe(recipe: str | os.PathLike | Mapping | Recipe) -> Recipe:
    """The one way to a Recipe: a built-in name (``reference``, ``paper``, ``repllama``, ``mean``), a path
    to a .toml/.json recipe file, recipe data (as llara.json or an index records it), or a Recipe."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe)
    if isinstance(recipe, str) and recipe in BUILTIN_RECIPES:
        return builtin_recipe(recipe)
    if not isinstance(recipe, str | os.PathLike):
        raise LlaraError(f"a recipe is a name or a file, not {recipe!r}")
    path = Path(recipe)
    if path.suffix.lower() not in SUFFIXES and not path.exists():
        raise LlaraError(
            f"unknown recipe {os.fspath(recipe)!r}; choose one of {', '.join(BUILTIN_RECIPES)}, "
            "or give a .toml or .json recipe file"
        )
    found = read_recipe(path)
    if found.name in BUILTIN_RECIPES and found != builtin_recipe(found.name):
        raise LlaraError(
            f"{found.name!r} is a built-in recipe's name; give this recipe another name", path, None, "name"
        )
    return found


RECIPES: dict[str, Recipe] = {name: builtin_recipe(name) for name in BUILTIN_RECIPES}  # the built-ins by name
SPECIAL_TOKENS = RECIPES["reference"].special_tokens  # <s1>..<s16>: the reference recipe's added tokens
