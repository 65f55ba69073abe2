"""Santurkar, Tsipras, Ilyas & Madry 2018 (How Does Batch Normalization Help Optimization?): Figs 1-4, Fig 8,
the lp norms and the sharpness over training, from one set of runs (vgg_dln.yaml)."""
