"""llara inside other tools: sentence-transformers, MTEB, and exported model folders."""
