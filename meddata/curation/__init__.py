"""The text logic of the curation steps (meddata/steps/normalize.py, chinese.py, language.py,
quality.py, perplexity.py), kept apart from the step plumbing so that it can be read and
tested on plain strings: each module takes text and gives text, a language or a verdict."""
