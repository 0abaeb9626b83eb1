"""Built-in distillers."""
from pd_plugins import hookimpl

_M = "pd_plugins.distillers"


@hookimpl
def register_distillers(register):
    register("dm", f"{_M}.dm:DM", summary="Distribution Matching (Zhao & Bilen, WACV 2023)")
    register("dc", f"{_M}.dc:DC", summary="Dataset Condensation, gradient matching (Zhao et al., ICLR 2021)")
    register("dsa", f"{_M}.dc:DSA", summary="DC with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021)")
    register("mtt", f"{_M}.mtt:MTT", summary="Matching Training Trajectories (Cazenavette et al., CVPR 2022)")
    register("glad", f"{_M}.glad:GLaD", summary="GLaD: distill into a frozen generator's latents (Cazenavette et al., CVPR 2023)")
    register("ld3m", f"{_M}.ld3m:LD3M", summary="LD3M: latent diffusion prior with a modified DDIM sampler (Moser et al. 2024)")
