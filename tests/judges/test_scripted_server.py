"""The scripted chat server: OpenAI's own client gets the script's replies in order, ``n`` at a
time; a used-up script, log-probabilities and malformed script files are refused in one line."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from densereward.core.errors import ConfigError
from densereward.judges.chat_server import load_replies, make_scripted_chat_app
from tests.servers import running


def test_openai_client_gets_the_replies_in_order() -> None:
    with running(make_scripted_chat_app(["one", "two", "three"])) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "write a reward"}]
        first = client.chat.completions.create(model="any", messages=messages, n=2)  # type: ignore[arg-type]
        assert [c.message.content for c in first.choices] == ["one", "two"]
        assert [c.finish_reason for c in first.choices] == ["stop", "stop"]
        second = client.chat.completions.create(model="any", messages=messages)  # type: ignore[arg-type]
        assert second.choices[0].message.content == "three"
        with pytest.raises(openai.APIStatusError) as used_up:
            client.chat.completions.create(model="any", messages=messages)  # type: ignore[arg-type]
        assert used_up.value.status_code == 503
        assert "used up (0 left, 1 asked)" in used_up.value.response.json()["detail"]
        with pytest.raises(openai.UnprocessableEntityError) as no_logprobs:
            client.chat.completions.create(model="any", messages=messages, logprobs=True)  # type: ignore[arg-type]
        assert "log-probabilities" in no_logprobs.value.response.json()["detail"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"content": "a"}\nnot json\n', r"replies\.jsonl:2: not JSON"),
        ('{"content": 3}\n', r"replies\.jsonl:1: expected"),
        ("\n\n", "holds no replies"),
    ],
)
def test_bad_script_files_are_one_line_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "replies.jsonl"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_replies(file)


def test_script_file_round_trips(tmp_path: Path) -> None:
    file = tmp_path / "replies.jsonl"
    file.write_text('{"content": "```python\\nx = 1\\n```"}\n\n{"content": "b"}\n')
    assert load_replies(file) == ["```python\nx = 1\n```", "b"]


def test_cli_serves_a_script_and_stops_on_sigterm(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from densereward.cli import app
    from densereward.signals.judge_client import ChatRequest, JudgeClient

    script = tmp_path / "replies.jsonl"
    script.write_text('{"content": "first"}\n{"content": "second"}\n')
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "densereward.cli",
            "judge-server",
            "--replies",
            str(script),
            "--port",
            "0",
            "--name",
            "s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"(http://\S+/v1)", line)
        assert url, line
        with JudgeClient(url.group(1), "s", cache=None, retries=0) as client:
            (reply,) = client.ask([ChatRequest((("user", "go"),), n=2)])
        assert reply.texts == ("first", "second")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    for arguments in ([], [str(tmp_path), "--replies", str(script)]):
        result = CliRunner().invoke(app, ["judge-server", *arguments])
        assert result.exit_code == 2 and "one of the two" in result.output
