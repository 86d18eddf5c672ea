"""Differential privacy (Part II of the course), one module a concept.

- :mod:`course_lib.dp.databases` — databases and their neighbours, empirical vs global
  sensitivity, the differencing attack and a linkage attack on synthetic records (lesson 04).
- :mod:`course_lib.dp.mechanisms` — randomized response (lesson 05); the Laplace, Gaussian
  (classic and analytic) and exponential mechanisms, with exact discrete samplers that resist the
  floating-point attack on textbook Laplace (lesson 06).
- :mod:`course_lib.dp.composition` — sequential, parallel and advanced composition and a privacy
  budget that refuses to overspend (lesson 06).
- :mod:`course_lib.dp.pate` — teacher ensembles, noisy vote aggregation (LNMax, GNMax) and their
  data-independent and data-dependent privacy analysis (lesson 07).
- :mod:`course_lib.dp.accounting` — Rényi-DP accounting of the subsampled Gaussian for DP-SGD
  (lesson 08); it also re-exports the composition API.
- :mod:`course_lib.dp.dpsgd` — per-sample gradients, clipping, secure Gaussian noise, Poisson
  sampling and a private trainer that reports ε (lesson 08).
- :mod:`course_lib.dp.attacks` — membership inference: loss threshold and LiRA (lesson 08).
- :mod:`course_lib.dp.auditing` — empirical lower bounds on ε: Clopper–Pearson audits from an
  attack's TPR/FPR, the one-run audit of Steinke, Nasr & Jagielski (2023) (lesson 22).
- :mod:`course_lib.dp.analytics` — user-level contribution bounding, GROUP BY with partition
  selection, noisy sum ÷ noisy count, DP quantiles, and the same with OpenDP (lesson 23).
- :mod:`course_lib.dp.synthetic` — DP synthetic data from noisy 2-way marginals and a Chow–Liu
  tree, with marginal error and a distance-to-closest-record attack (lesson 23).

Every public function checks its inputs first, with the shared rules of
:mod:`course_lib.validation` (numpy and one-element tensor scalars accepted; NaN, out-of-range and
wrongly typed values refused with a message naming the parameter).

Import what you need from its module, e.g.
``from course_lib.dp.mechanisms import laplace_mechanism``.
"""
