"""The toy world: synthetic skills with exactly checkable answers, and three built-in
teachers trained on it, so that distillation can be measured exactly on a laptop.

A leaf: no product module imports it. `register` (the `persea.plugins` entry point in
pyproject.toml) puts its skills in `persea.skills` and its teachers in `persea.models.builtin`.
"""

from persea.models.builtin import register_builtin
from persea.skills import TOYWORLD, World, register_world
from persea.toyworld.builtin import BUILTIN_TEACHERS
from persea.toyworld.dataset import SPLITS, Item, make_items, make_mixture, split_of
from persea.toyworld.skills import SKILLS, Skill, get_skill

__all__ = ["SKILLS", "SPLITS", "Item", "Skill", "get_skill", "make_items", "make_mixture",
           "register", "split_of"]


def register() -> None:
    """Register the toy world's skills and its built-in teachers with the product."""
    register_world(World(TOYWORLD, SKILLS, make_items, make_mixture))
    for teacher in BUILTIN_TEACHERS.values():
        register_builtin(teacher)
