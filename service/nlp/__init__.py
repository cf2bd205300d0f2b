"""Reading clinical text: sentences, spinal levels, finding targets, and ConText assertions.

Each module does one job (the medspaCy design, in plain Python: measured at a tenth of its
cost with the same accuracy, shared/research/nlp.md). The vocabularies are data in
`service/knowledge/`: `concepts.toml` (what a finding is called) and `context_rules.json`
(negation, uncertainty, history and family triggers). None of these modules logs anything.
"""
