"""Loading models, recipes and prompts, the one embedding forward, llara.json and precision."""
