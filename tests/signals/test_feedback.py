from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from densereward import Trajectories
from densereward.signals import AIFeedback, OpenAIAnnotator, SignalContext
from densereward.signals.feedback import AnnotationError
from densereward.worlds.control.captions import describe
from densereward.worlds.control.envs import make_env
from densereward.worlds.control.expert import demonstrations, expert_actions


def test_captions_of_a_solved_doorkey_episode() -> None:
    env = make_env("MiniGrid-DoorKey-5x5-v0")
    obs, _ = env.reset(seed=0)
    captions = [describe(obs[None])[0]]
    for _ in range(2):
        for action in expert_actions(env.unwrapped):
            obs, *_ = env.step(action)
        captions.append(describe(obs[None])[0])
    assert captions == [
        "You carry nothing. You see a key.",
        "You carry a key. You see a locked door.",
        "You carry a key. You see a goal, an open door.",
    ]


def _batch(observations: np.ndarray) -> Trajectories:
    return Trajectories(
        torch.tensor([0, len(observations)]), {"obs": torch.from_numpy(observations)}
    )


def _doorkey_states() -> tuple[np.ndarray, np.ndarray]:
    episodes = demonstrations("MiniGrid-DoorKey-5x5-v0", 12, 0)
    obs = np.concatenate(episodes)
    carrying = np.array(["carry a key" in c for c in describe(obs)])
    return obs, carrying


def test_hashing_reward_is_the_label_decayed_by_visit_counts() -> None:
    obs, carrying = _doorkey_states()
    signal = AIFeedback(keywords=["carry a key"], scale=0.5).bind(SignalContext(captions=describe))
    first = signal(_batch(obs), "bonus").step("bonus").numpy()
    assert np.all(first == 0.0)  # nothing labelled yet: annotation never blocks the step
    signal.wait()
    second = signal(_batch(obs), "bonus").step("bonus").numpy()
    captions = describe(obs)
    counts: dict[str, int] = {}
    for caption in captions * 2:
        counts[caption] = counts.get(caption, 0) + 1
    expected = [0.5 * float("carry a key" in c) / np.sqrt(counts[c]) for c in captions]
    np.testing.assert_allclose(second, expected, rtol=1e-12)
    assert np.all(second[carrying] > 0) and np.all(second[~carrying] == 0)


@pytest.mark.parametrize("model", ["classification", "ranking"])
def test_learned_reward_models_separate_labelled_states(model: str) -> None:
    obs, carrying = _doorkey_states()
    signal = AIFeedback(
        keywords=["carry a key"], reward_model=model, decay=False, scale=1.0, train_steps=150
    ).bind(SignalContext(seed=0, captions=describe))
    signal(_batch(obs), "bonus")
    signal.wait()
    scores = signal(_batch(obs), "bonus").step("bonus").numpy()
    # Every key-carrying state scores above every other state (AUC = 1 on these demonstrations).
    assert scores[carrying].min() > scores[~carrying].max()


def test_captions_come_from_the_world_or_from_an_import_path() -> None:
    """Without ``caption`` the signal needs the world's captioner; with one it needs nothing."""
    from densereward.core.errors import ConfigError

    assert AIFeedback().needs().captions and not AIFeedback(caption="json:dumps").needs().captions
    with pytest.raises(ConfigError, match="offers no captioner"):
        AIFeedback().bind(SignalContext())
    obs, _ = _doorkey_states()
    own = AIFeedback(caption="tests.signals.test_feedback:describe_all_as_key", keywords=["key"])
    bound = own.bind(SignalContext())
    bound(_batch(obs), "bonus")
    bound.wait()
    assert np.all(bound(_batch(obs), "bonus").step("bonus").numpy() > 0)


def describe_all_as_key(observations: np.ndarray) -> list[str]:
    return ["a key"] * len(observations)


class _Judge(BaseHTTPRequestHandler):
    """A stand-in chat server on loopback: says yes when the observation mentions a key."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        observation = prompt.split("Observation:")[1].split("\n")[0]
        answer = "maybe" if "ball" in observation else ("Yes." if "key" in observation else "no")
        payload = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_openai_annotator_speaks_the_chat_completions_protocol() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        annotator = OpenAIAnnotator(
            f"http://127.0.0.1:{server.server_port}/v1", "judge", "get the key", timeout=5
        )
        assert annotator.label(["You carry a key.", "You see nothing."]) == [1, 0]
        with pytest.raises(AnnotationError, match="is not yes/no"):
            annotator.label(["You see a ball."])
    finally:
        server.shutdown()
    with pytest.raises(AnnotationError, match=r"annotator http://127\.0\.0\.1:9/v1"):
        OpenAIAnnotator("http://127.0.0.1:9/v1", "judge", "task", timeout=2, backoff=0.01).label(
            ["x"]
        )
