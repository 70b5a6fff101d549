"""
Fitting what makes the published confidence a probability (offline; the node only applies it).

* :mod:`.fitting`: logistic and Platt fits, the filter's observation model, ECE and
  reliability, contiguous cross-validation folds;
* :mod:`.self_calibration`: calibrate on the map's own images (the fallback, run by
  ``build_map``);
* :mod:`.drive`: calibrate on a second drive of the route with GPS (``r2former calibrate``).

Every sample comes from :meth:`~r2former_ros.core.localize.localizer.Localizer.step` (the
node's step), and candidate filter models are replayed through a
:class:`~r2former_ros.core.localize.decision.Decider`, so what is fitted is what is published.
What is stored is read back by :mod:`r2former_ros.core.localize.calibration_store`.
"""
