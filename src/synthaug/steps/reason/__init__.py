"""Reasoning data and self-improvement: methods built on the verifiers."""
