"""Built-in augmentations: kornia-based DSA and the identity."""
from pd_plugins import hookimpl

_M = "pd_plugins.training.augment"


@hookimpl
def register_augmentations(register):
    register("dsa", f"{_M}:dsa", summary="Differentiable Siamese Augmentation (Zhao & Bilen 2021), one op per call, via kornia")
    register("none", f"{_M}:none", summary="no augmentation")
