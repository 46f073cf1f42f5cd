"""Evaluation: scoring models on toy-world skills (issue 4 extends this to suites and gates)."""
