"""A scripted PAM conversation, the double of ``login.adapter``'s for ``login.flow.Login``."""

from __future__ import annotations

from collections.abc import Iterable


class Conv:
    """Answers are returned in order, then None; everything shown is kept.

    ``transcript`` has every message in order as ('prompt'|'info'|'error', text);
    ``prompts``, ``infos`` and ``errors`` the same texts by kind. An ``info`` shown
    with a prompt (the enrolment hint above "Code sent to") comes before it.
    """

    def __init__(self, answers: Iterable[str | None] = ()) -> None:
        self.answers = list(answers)
        self.transcript: list[tuple[str, str]] = []
        self.prompts: list[str] = []
        self.infos: list[str] = []
        self.errors: list[str] = []

    def prompt(self, text: str, info: str | None = None, echo: bool = False) -> str | None:
        if info:
            self.info(info)
        self.transcript.append(("echo prompt" if echo else "prompt", text))
        self.prompts.append(text)
        return self.answers.pop(0) if self.answers else None

    def info(self, text: str) -> None:
        self.transcript.append(("info", text))
        self.infos.append(text)

    def error(self, text: str) -> None:
        self.transcript.append(("error", text))
        self.errors.append(text)
