"""make all's preflight: models that cannot be had stop the run at once with advice."""

from __future__ import annotations

import pytest

from synthprobe.common.files import InputError
from synthprobe.preflight import check_cnn_weights, check_generator
from synthprobe.tiny_models import save_tiny_sd3


def test_local_pipeline_and_random_weights_pass(tmp_path):
    folder = save_tiny_sd3(tmp_path / "tiny")
    assert check_generator(str(folder)).endswith("ok")
    assert "nothing to fetch" in check_cnn_weights("resnet50", "none")


def test_missing_local_pipeline_is_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_generator(str(tmp_path / "nowhere"))


def test_local_weights_file_passes(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    assert "local file" in check_cnn_weights("resnet50", str(weights))


def test_unknown_weights_name_lists_the_known_ones():
    with pytest.raises(InputError, match="IMAGENET1K_V2"):
        check_cnn_weights("resnet50", "IMAGENET9K")


def test_timm_weights_offline_say_what_to_do(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "file_exists", offline)
    with pytest.raises(InputError, match="timm:efficientnet_lite0.*make demo"):
        check_cnn_weights("timm:efficientnet_lite0", "DEFAULT")


def test_missing_weights_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_cnn_weights("resnet50", str(tmp_path / "w.pth"))
