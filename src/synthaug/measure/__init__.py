"""Dataset measures: diversity, redundancy, coverage, lengths, scores, gap to a reference."""
