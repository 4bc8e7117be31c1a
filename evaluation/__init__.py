"""Evaluation: models scored on benchmark versions, apart from training.

- presets.py: the prompts (lm-evaluation-harness's where it has the task, CMB's, meddata's)
- answers.py: reading an answer out of generated text (shared with train/'s rewards)
- runner.py: evaluate one model on one benchmark; compare many
- lm_eval_parity.py: meddata's presets run next to lm-eval's own task code
"""
