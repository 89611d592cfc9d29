"""The reference code's `--remove_stop_words` for bag-of-words targets.

The reference (FlagEmbedding research/LLARA, pretrain/data.py) replaces every run of non-word
characters and underscores with a space, then drops each word whose lower case is an NLTK English
stop word or one of ``! , . ?``. NLTK keeps its word lists outside the package (a download at run
time), so its English list is written out here; after the regex no word holds an apostrophe, so the
forms with one ("don't") could never match and are left out.
"""

from __future__ import annotations

import re

NLTK_ENGLISH = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is
    are was were be been being have has had having do does did doing a an the and but if or because as until
    while of at by for with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will just don should now
    d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn
    weren won wouldn
    """.split()
)
_NON_WORD = re.compile(r"[\W_]+")


def remove_stop_words(text: str) -> str:
    """`text` as the reference's bag-of-words target with --remove_stop_words True."""
    words = _NON_WORD.sub(" ", text).split()
    return " ".join(w for w in words if w.lower() not in NLTK_ENGLISH)
