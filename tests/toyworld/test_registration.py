"""The toy world reaches the product only through its plugin entry point."""

from persea.models.builtin import builtin_models
from persea.skills import TOYWORLD, get_world
from persea.toyworld import SKILLS
from persea.toyworld.builtin import BUILTIN_TEACHERS


def test_the_entry_point_registers_the_teachers_and_the_skills():
    assert list(builtin_models()) == list(BUILTIN_TEACHERS)
    assert all(m.path.is_dir() for m in builtin_models().values())
    world = get_world(TOYWORLD)
    assert list(world.skills) == list(SKILLS)
    items = world.make_items("addition", "dev", 3, seed=1)
    assert len(items) == 3 and all(world.skills["addition"].check(i.answer, i.answer)
                                   for i in items)
