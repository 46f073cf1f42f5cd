"""Evaluation: suites (the toy world, lm-evaluation-harness tasks), runs stored as records
(`records`, `runner`), the scorecard with bootstrap intervals, the release gate and
`release.require_release`, which sealing and serving call. See docs/evaluate.md."""
