"""Verifiers: a code sandbox (`sandbox`) and a math answer checker (`answers`)."""
