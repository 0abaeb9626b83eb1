"""Built-in backbones (DC/MTT ConvNet family and the cross-architecture zoo)."""
from pd_plugins import hookimpl

_M = "pd_plugins.training.models"


@hookimpl
def register_models(register):
    register("convnet", f"{_M}:convnet", summary="ConvNet-D (width 128, instance norm, ReLU, avg pooling); DC/DM/MTT default")
    register("alexnet", f"{_M}:alexnet", summary="AlexNet sized for small images (DC/MTT zoo)")
    register("vgg11", f"{_M}:vgg11", summary="VGG11 with instance norm (DC/MTT zoo)")
    register("resnet18", f"{_M}:resnet18", summary="CIFAR-style ResNet-18 with instance norm")
    register("vit", f"{_M}:vit", summary="small ViT for small images (GLaD zoo, no LayerNorm by default)")
