"""image-check: an independent judge's verdict on each generated image."""
