"""BRISQUE, the offline classical baseline: its regressor loads, and scores worsen with distortion."""

import numpy as np
from PIL import Image, ImageFilter
from scipy import stats
from skimage import data

from evaluation.brisque_baseline import SupportVectorRegressor, brisque_score, features, model_folder


def test_regressor_reads_the_shipped_libsvm_model():
    regressor = SupportVectorRegressor(model_folder() / "svm.txt")
    assert regressor.support.shape == (770, 36) and regressor.gamma == 0.05


def test_features_are_finite_for_flat_and_tiny_images():
    for image in (Image.new("RGB", (64, 64), (128, 128, 128)), Image.fromarray(data.camera()).resize((16, 16))):
        assert np.all(np.isfinite(features(image))) and features(image).shape == (36,)


def test_scores_rise_with_blur_and_noise():
    image = Image.fromarray(data.astronaut()).resize((256, 256))
    blurred = [brisque_score(image.filter(ImageFilter.GaussianBlur(r))) for r in (0.01, 1, 2, 4)]
    rng = np.random.default_rng(0)
    pixels = np.asarray(image, dtype=float)
    noisy = [brisque_score(Image.fromarray(np.clip(pixels + rng.normal(0, s, pixels.shape), 0, 255).astype(np.uint8)))
             for s in (0.01, 8, 20, 40)]
    assert stats.spearmanr(range(4), blurred).statistic == 1.0, blurred
    assert stats.spearmanr(range(4), noisy).statistic == 1.0, noisy
    assert blurred[0] < 30 < blurred[-1]
