"""Affine matrices, the warp, points and boxes, augmentation, head-crop geometry."""
