"""The DiT denoiser and its config, the [model] section of a run."""
