"""normexp-reproduce: run experiments at a profile, aggregate, plot, check the claims, write results/.

One module per stage:

- ``spec``: an experiment spec (``experiments/<paper>/<name>.yaml``, or a user's ``--spec``) layered over its
  folder's ``defaults.yaml`` and ``experiments/defaults.yaml`` (the profiles), and the hooks it names;
- ``plan``: one run per (cell, seed) at the profile, into
  ``<outputs>/<profile>/<experiment>/<cell>/seed<k>``; a ``stages`` hook may add cells once earlier runs are
  finished (e.g. runs at 5 x eta0 after the eta0 search);
- ``planned_run``: one planned run, its overrides, composed config and run dir, and what that dir holds;
- ``execute``: what is not finished yet, in this process or in joblib workers (``--jobs``); completed and
  diverged runs are skipped, interrupted ones resume, a run that raises is recorded as failed;
- ``tables``: the run table (``runs.csv``) and every metric record (``curves.csv``);
- ``evaluate``: the hooks' checks, figures and tables into ``<results>/<profile>/<experiment>/``, with
  ``claims.json``;
- ``report``: ``<results>/REPORT.md`` from every ``claims.json`` under ``<results>``;
- ``command``: the command line.

Hooks import what they need from :mod:`normexp.claims`, never from here.
"""

from .command import cli, main

__all__ = ["cli", "main"]
