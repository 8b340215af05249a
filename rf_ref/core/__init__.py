"Configuration, presets, EMA, kernels and checkpoint files: what every other part builds on."
