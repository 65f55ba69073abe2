"""Loss landscapes and curvature of a trained model (``normexp-landscape``).

- :mod:`normexp.landscape.directions`: random directions, filter-normalized as in Li et al. 2018.
- :mod:`normexp.landscape.surface`: loss and accuracy on a 1D or 2D grid around the weights, resumable and
  spread over processes; ``surface_of_run`` is the entry for a run dir.
- :mod:`normexp.landscape.figures`: 1D curves, 2D contours and 3D views, runs side by side on one scale.
- :mod:`normexp.landscape.curvature`: Hessian-vector products (shared with the ``hessian`` probe), power
  iteration, Lanczos top-k, Hutchinson's trace, stochastic Lanczos quadrature; ``spectrum_of_run``.
- :mod:`normexp.landscape.cli`: the console script.
"""
