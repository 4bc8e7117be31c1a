"""meddata: versioned, validated, deduplicated medical training data for TRL."""

__version__ = "0.1.0"
