"""separability: per-layer concept separability and per-channel concept statistics."""
