"""cnn-hooks: images to an activation store through forward hooks.

``hook_points`` names and pools the module calls; ``run`` drives the run between the decoding workers
(common.image_dataset) and ``writer`` (the store's write buffer); ``forward`` is the per-batch forward, in this
process or, through ``run_cluster``, on Dask workers. Networks and their preprocessing are common's, since
image-check's classifier judges build them too.
"""
