import numpy as np
import pytest
import torch
from PIL import Image

from src.features.backbone import (NUM_FEATURES, Preprocessing, convert_state_dict, create_model, load_extractor,
                          pretrained_weights_path, save_extractor, state_digest)
from src.core.errors import ModelError


@pytest.fixture(scope="module")
def imagenet_model():
    return create_model(num_classes=1000).eval()


def test_weights_convert_to_timm_strictly():
    import timm

    sd = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    converted = convert_state_dict(sd)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted, strict=True)


def test_backbone_is_really_pretrained(imagenet_model):
    """scikit-learn ships two real photos: a Chinese temple and a flower."""
    from sklearn.datasets import load_sample_images

    pre = Preprocessing()
    china, flower = load_sample_images().images
    x = torch.from_numpy(np.stack([pre(Image.fromarray(china)), pre(Image.fromarray(flower))])).permute(0, 3, 1, 2)
    with torch.no_grad():
        top5 = imagenet_model(x.contiguous(memory_format=torch.channels_last)).topk(5).indices.tolist()
    # ImageNet: 698 palace, 663 monastery, 442 bell cote, 832 stupa ...; 985 daisy
    assert {698, 663, 442, 832} & set(top5[0])
    assert top5[1][0] == 985


def test_preprocessing_exact():
    img = Image.new("RGB", (300, 200), (255, 0, 128))
    a = Preprocessing()(img)
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    assert np.allclose(a[0, 0], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_extractor_round_trip_weights_only(tmp_path):
    model = create_model(num_classes=0)
    p = tmp_path / "fe.pth"
    save_extractor(model, p, Preprocessing.for_size(96))
    payload = torch.load(p, weights_only=True)
    assert payload["arch"] == "tf_efficientnet_lite0" and payload["num_features"] == NUM_FEATURES
    loaded, pre = load_extractor(p)
    assert pre.image_size == 96
    assert state_digest(loaded.state_dict()) == state_digest({k: v for k, v in model.state_dict().items()})
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert loaded(x).shape == (2, NUM_FEATURES)


def test_load_extractor_rejects_other_files(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a grocery-mlops feature extractor"):
        load_extractor(tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="does not exist"):
        load_extractor(tmp_path / "missing.pth")


def test_held_out_images_are_scored_in_batches_with_the_same_predictions():
    """Fine-tuning scores its held-out images a batch at a time (memory); predictions match one pass."""
    import torch

    from src.features import finetune
    from src.features.frozen_prefix import to_tensor

    model = create_model(num_classes=5).eval()
    pre = Preprocessing.for_size(64)
    px = np.random.default_rng(0).integers(0, 256, size=(7, 64, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        whole = model(to_tensor(np.stack([pre.normalise(p) for p in px]))).argmax(1).numpy()
    forward = lambda batch: model(to_tensor(batch))  # noqa: E731
    assert np.array_equal(finetune._predict(forward, px, pre, batch_size=3), whole)
    assert len(finetune._predict(forward, px[:1], pre)) == 1
