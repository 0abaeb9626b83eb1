"""Built-in generative priors for GLaD/LD3M and the `pd-run prior` command group."""
from pd_plugins import hookimpl

_M = "pd_plugins.distillation.generative"


@hookimpl
def register_generators(register):
    register("decoder", f"{_M}.decoder:DecoderGenerator",
             summary="small class-conditional conv decoder: random init (seeded) or a trained `pd-run prior train --kind decoder`")
    register("ldm", f"{_M}.ldm:LatentDiffusionGenerator",
             summary="class-conditional latent diffusion (diffusers UNet + autoencoder) with LD3M's modified DDIM sampler")


@hookimpl
def register_commands(cli):
    from pd_plugins.distillation.generative.commands import prior

    cli.add_command(prior)
