"""sd-generate: prompt records to images through a diffusers pipeline and the image cache."""
