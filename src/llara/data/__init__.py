"""Readers, validation and atomic writers for every file llara reads or writes."""
