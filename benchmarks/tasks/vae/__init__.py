"""Latent-variable models: VAEs with Gaussian, IAF and planar-flow posteriors, their ELBO
and importance-weighted log-likelihood, and the VAE table
(:class:`~benchmarks.tasks.vae.task.VAETask`).
"""
