import pytest

from densereward.worlds.control.expert import demonstrations


@pytest.mark.parametrize("env_id", ["MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-8x8-v0"])
def test_expert_solves_doorkey_from_any_seed(env_id: str) -> None:
    # demonstrations() raises unless every episode ends in success.
    episodes = demonstrations(env_id, 15, seed=123)
    assert len(episodes) == 15 and all(e.shape[1:] == (7, 7, 3) for e in episodes)
