"""EBAE + EBAR adaptation on plain text (`llara pretrain`)."""
