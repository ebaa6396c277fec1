"""What the methods that train the encoder share: its images at the side it trained at."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import three_shapes

from imageclust.data.prepared import RawDataset, write_prepared
from imageclust.finetune.images import Images
from imageclust.models.backbones import build_backbone
from imageclust.models.encoder import save_encoder
from imageclust.pretrain.params import PretrainParams
from imageclust.runtime import resize_square


@pytest.mark.parametrize("image_size", [None, 12])
def test_images_come_at_the_encoders_training_side(tmp_path, image_size):
    images, labels = three_shapes(n=9)
    ids = np.array([f"img{i}" for i in range(9)], dtype=object)
    write_prepared(tmp_path / "prepared", RawDataset("shapes", images, labels, np.full(9, "train"), ids, list("abc")))
    params = PretrainParams(widths=[4, 8], image_size=image_size)
    save_encoder(tmp_path / "encoder.pt", build_backbone("small_cnn", 1, 8, widths=[4, 8]), params, 1, 8)
    run = SimpleNamespace(
        prepared_dir=tmp_path / "prepared",
        row_images=np.arange(9)[::-1],
        device=torch.device("cpu"),
        encoder_path=tmp_path / "encoder.pt",
    )
    batch = Images(run).batch(torch.tensor([0, 1]))
    side = image_size or 8
    assert batch.shape == (2, 1, side, side) and batch.dtype == torch.float32
    expected = torch.from_numpy(images[[8, 7]]).permute(0, 3, 1, 2)
    if image_size:
        expected = resize_square(expected, image_size)
    torch.testing.assert_close(batch, expected.float() / 255)


def test_resize_square_keeps_the_centre_and_averages_when_shrinking():
    x = torch.zeros(1, 1, 4, 16, dtype=torch.uint8)
    x[..., 4:12] = 200  # a bright centre in a wide image
    out = resize_square(x, 2)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.uint8
    assert (out == 200).all()  # the centre square kept, the dark sides cropped away
    checker = torch.tensor([[0, 255] * 2, [255, 0] * 2] * 2, dtype=torch.uint8).view(1, 1, 4, 4)
    assert all(120 <= v <= 135 for v in resize_square(checker, 2).flatten().tolist())  # averaged, not sampled
