"""Augmenting existing data: labeling, reformation and classic non-LLM operations."""
