"""Evaluation: models scored on benchmark versions, apart from training.

- presets.py: the prompts (lm-evaluation-harness's where it has the task, CMB's, meddata's)
- scorer.py: a model loaded for scoring; log-likelihoods (as lm-eval's HFLM) and generation
- metrics.py: accuracy with Wilson intervals, BLEU/ROUGE tallies
- answers.py: reading an answer out of generated text (train/'s rewards and judge use it too)
- runner.py: evaluate one model on one benchmark; compare many
- output.py: the markdown table and lm-evaluation-harness's results layout
- lm_eval_parity.py: meddata's presets run next to lm-eval's own task code
"""
