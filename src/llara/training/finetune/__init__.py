"""Contrastive fine-tuning: query/positive/negative rows -> InfoNCE on the shared HF Trainer machinery."""
