import numpy as np

from rightwhale.views.saliency import occlusion_boxes, occlusion_map


def test_boxes_cover_every_pixel():
    covered = np.zeros((23, 17), bool)
    for y, x in occlusion_boxes(23, 17, patch=6, stride=5):
        covered[y:y + 6, x:x + 6] = True
    assert covered.all()


def test_map_peaks_where_the_classifier_looks():
    """A 'classifier' that only looks at a bright patch: occluding it is what hurts."""
    image = np.full((32, 32, 3), 40, np.uint8)
    image[20:26, 4:10] = 250

    def predict_proba(batch):
        p = batch[:, 20:26, 4:10].mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], axis=1)

    heat = occlusion_map(predict_proba, image, label=1, patch=4, stride=2)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 20 <= y < 26 and 4 <= x < 10
    assert heat[:10, 20:].max() == 0  # far from the patch nothing changes
