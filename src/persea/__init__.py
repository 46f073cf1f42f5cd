"""persea: distil a closed language model from several open teachers, then evaluate, seal,
serve and route it. Each stage is a subpackage; the CLI (`persea.cli`) is a thin layer over them."""

__version__ = "0.1.0"
