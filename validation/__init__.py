"""Validation with Great Expectations: a suite per kind (suites.py) and the runner
(run.py) behind `meddata validate` and the pre-publish check of builds."""
