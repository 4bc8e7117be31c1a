"""Validation with Great Expectations: a suite per kind (suites.py) and the runner
(run.py) behind `meddata validate` and the pre-publish check of builds."""

# The checks of a published version's files, which `meddata validate` runs after the kind's
# row suite; a build runs the row suite before publishing, when these files do not exist
# yet (the publisher itself refuses a stage that does not conserve rows).
MANIFEST_CHECKS = ("row_conservation", "shard_hashes", "row_count")
