"""The toy world: synthetic skills with exactly checkable answers, and three built-in
teachers trained on it, so that distillation can be measured exactly on a laptop."""

from persea.toyworld.dataset import SPLITS, Item, make_items, make_mixture, split_of
from persea.toyworld.skills import SKILLS, Skill, get_skill

__all__ = ["SKILLS", "SPLITS", "Item", "Skill", "get_skill", "make_items", "make_mixture",
           "split_of"]
