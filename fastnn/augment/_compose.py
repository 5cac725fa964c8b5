"""Compose: a list of transforms applied to a batch in order, fused into stages."""

from .._checks import check_instance
from ._runner import Runner
from ._transform import Transform


class Compose(Runner):
    """Apply transforms in order to a batch, fusing what can be fused (see the
    fastnn.augment docstring). seed: an int >= 0, or None for a random one (then
    `self.seed` holds it), the next of fastnn.manual_seed's stream after it was called.
    Call k (from 0, counted in `self.step`) draws its parameters from (seed, k); pass
    step= to redo a given call without moving the counter.
    image_size: the (h, w) of the images it will get, if known: then a crop larger
    than its padded input raises ValueError here rather than at the first call (as it
    does without image_size when an earlier crop or resized crop fixes the size)."""

    def __init__(self, transforms, seed=None, image_size=None):
        transforms = list(transforms)
        for t in transforms:
            check_instance(t, "transforms", Transform, "fastnn.augment transforms")
        super().__init__(transforms, seed=seed, image_size=image_size)

    def __repr__(self):
        return f"Compose({self.transforms!r}, seed={self.seed})"
