"""Samplers: seed attributes drawn from distributions (no model call), as the `sample` step."""
