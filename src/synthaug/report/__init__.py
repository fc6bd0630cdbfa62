"""The HTML quality report of a dataset or a run folder."""
