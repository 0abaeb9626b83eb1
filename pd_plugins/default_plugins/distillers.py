"""Built-in distillers."""
from pd_plugins import hookimpl

_M = "pd_plugins.distillation"


@hookimpl
def register_distillers(register):
    register("dm", f"{_M}.dm:DM", summary="Distribution Matching (Zhao & Bilen, WACV 2023)")
    register("dc", f"{_M}.dc:DC", summary="Dataset Condensation, gradient matching (Zhao et al., ICLR 2021)")
    register("dsa", f"{_M}.dc:DSA", summary="DC with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021)")
    register("mtt", f"{_M}.mtt:MTT", summary="Matching Training Trajectories (Cazenavette et al., CVPR 2022)")
    register("glad", f"{_M}.glad:GLaD", summary="GLaD: distill into a frozen generator's latents (Cazenavette et al., CVPR 2023)")
    register("ld3m", f"{_M}.ld3m:LD3M", summary="LD3M: latent diffusion prior with a modified DDIM sampler (Moser et al. 2024)")
    register("random", f"{_M}.coreset:RandomCoreset", summary="coreset baseline: ipc random real images per class")
    register("herding", f"{_M}.coreset:Herding",
             summary="coreset baseline: herding in a trained ConvNet's feature space (Welling 2009; DC's table)")
    register("k-center", f"{_M}.coreset:KCenter",
             summary="coreset baseline: k-center greedy in a trained ConvNet's feature space (Sener & Savarese 2018)")
    register("forgetting", f"{_M}.coreset:Forgetting",
             summary="coreset baseline: the most-forgotten real images per class (Toneva et al., ICLR 2019)")
