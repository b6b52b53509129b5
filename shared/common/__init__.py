"""Infrastructure every stage uses: CLI options, files, devices, progress, statistics kernels, networks and
image decoding."""
