"""persea: distil a closed language model from several open teachers, then evaluate, seal,
serve and route it. Stages: harvest -> distill -> evaluate (and gate) -> serve, each a
subpackage; `persea.cli` is the only place that reads flags; `persea.toyworld` is a plugin."""

__version__ = "0.1.0"
