"""The library behind ``cnn-hooks``: build a CNN, name its hook points, pool in the hooks, fill a store.

``models`` builds the network and ``preprocessing`` its input transform; ``hook_points`` names and pools
the module calls; ``run`` drives the forward (the mapper) between ``reader`` (decoding workers) and
``writer`` (the store's write buffer), with ``precision`` choosing autocast.
"""
