"""Reference augmentation (`localizer.augment_references`): mirrored and turned copies of the
good images enter the bank, share their image's source, and a bank records how it was made."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam_ros.localize.reference import BankError, augmented, build_bank, distance_map, load_bank, save_bank


def pixels(image: np.ndarray) -> torch.Tensor:
    """A stand-in encoder: each pixel's colour is its patch feature (grid = the image itself)."""
    return F.normalize(torch.from_numpy(image.astype(np.float32)) + 0.01, dim=-1)


def asymmetric(seed: int = 0, rows: int = 6, cols: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (rows, cols, 3)).astype(np.uint8)


def test_flips_and_d4_make_four_and_eight_different_copies_and_d4_refuses_non_square_images():
    image = asymmetric()
    for augment, n in (("none", 1), ("flips", 4), ("d4", 8)):
        copies = augmented(image, augment)
        assert len(copies) == n and np.array_equal(copies[0], image)
        assert len({c.tobytes() for c in copies}) == n
    assert np.array_equal(augmented(image, "flips")[3], np.rot90(image, 2))
    with pytest.raises(BankError, match="needs square images"):
        augmented(asymmetric(rows=4), "d4")
    with pytest.raises(BankError, match="choose one of"):
        augmented(image, "mirror")


def test_a_mirrored_good_part_is_normal_only_with_flips():
    reference, mirrored = asymmetric(1), asymmetric(1)[:, ::-1]
    for augment, normal in (("none", False), ("flips", True)):
        bank = build_bank([reference, asymmetric(2)], pixels, "sam:lite_medsam", "sam", spatial_radius=0,
                          progress=False, augment=augment)
        assert len(bank.patches) == (4 if normal else 1) * 2 * 36
        far = float(distance_map(pixels(np.ascontiguousarray(mirrored)), bank, 1, 0, 10_000).max())
        assert (far < 1e-5) == normal, (augment, far)


def test_copies_never_calibrate_against_their_own_image():
    # with one image, its own mirrors hold its own patches: calibration leaves them out
    plain = build_bank([asymmetric(3)], pixels, "sam:lite_medsam", "sam", spatial_radius=-1, progress=False)
    one = build_bank([asymmetric(3)], pixels, "sam:lite_medsam", "sam", spatial_radius=-1, progress=False,
                     augment="flips")
    assert one.normal_distance == pytest.approx(plain.normal_distance)
    # two images of far-apart colours: each is calibrated against the other's copies, never its own
    red, blue = asymmetric(4), asymmetric(5)
    red[..., 0], blue[..., 2] = 255, 255
    red[..., 2], blue[..., 0] = 0, 0
    two = build_bank([red, blue], pixels, "sam:lite_medsam", "sam", spatial_radius=-1, progress=False,
                     augment="flips")
    assert two.normal_distance > 0.1, two.normal_distance


def test_a_bank_built_with_other_augmentation_is_refused_in_one_line(tmp_path):
    bank = build_bank([asymmetric(1), asymmetric(2)], pixels, "sam:lite_medsam", "sam", spatial_radius=-1,
                      progress=False, augment="flips")
    path = tmp_path / "bank.safetensors"
    save_bank(bank, path)
    assert load_bank(path, "sam:lite_medsam", "sam", -1, "flips").augment == "flips"
    with pytest.raises(BankError, match="augment_references=flips, not none") as caught:
        load_bank(path, "sam:lite_medsam", "sam", -1)
    assert "\n" not in str(caught.value)
