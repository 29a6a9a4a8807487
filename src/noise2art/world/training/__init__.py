"""Training of the embedded model's networks on the procedural world.

One module per network (`autoencoder`, `unet`, `clip`, `aesthetic`, `attributes`), each
with a dataclass config and a `train(config, progress=True)` function that resumes from
its last checkpoint. `export` assembles the trained networks into the model folder that
`noise2art.load_model` reads.
"""
