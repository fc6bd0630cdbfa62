"""Built-in recipes: one YAML per published method, with citation and taxonomy tags."""

from pathlib import Path


def recipe_dir() -> Path:
    """The folder holding the built-in recipe files."""
    return Path(__file__).parent
