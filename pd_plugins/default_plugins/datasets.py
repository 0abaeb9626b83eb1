"""Built-in datasets (lazy: nothing heavy is imported until a dataset is loaded)."""
from pd_plugins import hookimpl

_M = "pd_plugins.data.builtin"


@hookimpl
def register_datasets(register):
    register("digits", f"{_M}:digits", summary="scikit-learn 8x8 digits, embedded in the wheel (default)",
             default_budget="quick")
    register("npz", f"{_M}:npz", summary="any .npz with x_train, y_train, x_test, y_test (--data-root FILE)")
    register("mnist", f"{_M}:mnist", summary="MNIST via torchvision from a local --data-root (no download)")
    register("fashion-mnist", f"{_M}:fashion_mnist", aliases=("fashion_mnist", "fmnist"),
             summary="Fashion-MNIST via torchvision from a local --data-root (no download)")
    register("cifar10", f"{_M}:cifar10", summary="CIFAR-10 via torchvision from a local --data-root (no download)")
    register("cifar100", f"{_M}:cifar100", summary="CIFAR-100 via torchvision from a local --data-root (no download)")
    register("imagefolder", f"{_M}:imagefolder", summary="ImageNet-style ROOT/train/<class>/ and ROOT/val/<class>/ folders")
    for name, title in (("imagenette", "ImageNette"), ("imagewoof", "ImageWoof"), ("imagefruit", "ImageFruit"),
                        ("imagemeow", "ImageMeow"), ("imagesquawk", "ImageSquawk"), ("imageyellow", "ImageYellow")):
        register(name, f"pd_plugins.data.imagenet_subsets:{name}",
                 summary=f"{title}, 10 ImageNet classes (MTT/GLaD), from `pd-run prepare subset {name}`'s file")
