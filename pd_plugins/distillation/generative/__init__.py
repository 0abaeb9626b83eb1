"""Generative priors for GLaD and LD3M: generator plugins, the latent distillation loop, prior training."""
