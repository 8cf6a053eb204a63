"""Analysis of finished sweeps: the questions the thesis answered by eye, answered with intervals.

* ``load``: a sweep folder or Parquet file (``mlflow_source``: an MLflow experiment, read through
  ``finalbn.tracking``) -> ``SweepData`` (``sweep_data``: Polars tables and the sweep's ``grid.Plan``,
  read from its sweep.json; ``coerce``: flattened config values back to their types).
* ``stats``: seed aggregation, paired differences, seeded bootstrap CIs, exact permutation tests.
* ``threshold``: the imbalance ratio beyond which the final-BN gain stops being meaningful.
* ``batch``: the batch-size optimum and whether its neighbours are distinguishable.
* ``factorial``: main effects and two-way interactions of BN, WL, DA, MX, UF, WD; best/worst configs.
* ``tables``: Tables 4.2, 4.6, 4.7, 4.8 with the thesis' numbers (``thesis``) beside them.
* ``figures``, ``gradcam``: Figures 4.3-4.9 as PNG.
* ``sections``: the registry of report sections, one per declared analysis, registered beside it
  (``imbalance``, ``batch``, ``factorial``, ``tables``); ``seeds`` and ``comparison_figures``: the parts
  every report has.
* ``headline``: the sweep's answer, one short sentence per finding, the seed caveat first when seeds are few;
  ``classes``: what the data and classes are called (the thesis' names, or the user's class folders).
* ``report``: ``write_report(sweep_folder)`` -> one self-contained HTML report and a Markdown twin, its steps
  shown as they run (``progress``).

Methods: docs/analysis.md. Submodules are imported on use, so ``import finalbn.analysis`` stays cheap.
"""
