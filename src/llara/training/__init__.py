"""Training: the shared Trainer machinery, memory planning, training data mining, pretrain/ and finetune/."""
