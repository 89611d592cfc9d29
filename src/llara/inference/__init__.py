"""Using a model: LlaraEncoder, corpus encoding to disk, and explain."""
