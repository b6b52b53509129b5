"""Prompt records to images through the content-addressed cache (the library behind ``sd-generate``).

The flow: resolve the model and the settings, compute every record's cache
key without loading anything, link cached images into the output folder,
build the pipeline only if something is missing, generate the missing images
in batches (one ``torch.Generator`` per record, so an image depends on its own
seed only), and return one row per record. The pipeline comes from a builder
function so tests can inject tiny or failing ones.

``settings`` checks the options, ``model`` reads what the cache keys need of the model without loading it,
``pipeline`` loads it (quantized where asked) and ``run`` makes the missing images.
"""
