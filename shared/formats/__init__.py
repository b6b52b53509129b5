"""The file contracts between the stages (docs/formats.md), one module each.

These, and infrastructure (files, CLI helpers), are the only modules two stages share:

- ``prompts``: prompt records, ``prompts.jsonl`` (wn-prompts -> sd-generate).
- ``image_folder``: an image folder, ``images.jsonl`` or a plain ImageFolder tree (sd-generate -> cnn-hooks,
  image-check, report).
- ``image_cache``: the content-addressed image cache (sd-generate runs and shards).
- ``activation_store``: the Zarr activation store, ``acts.zarr`` (cnn-hooks -> separability, bias-report).
- ``image_checks``: ``checks.jsonl`` (image-check -> the analyses, report).
- ``analysis_folder``: an analysis folder's ``summary.json`` and tables (separability, bias-report,
  image-check -> report).
"""
