"""Stand-ins for the OpenAI, Anthropic and google-genai SDK clients, for the guard tests.

Each exposes the method path its SDK has (``client.chat.completions.create``,
``client.messages.create``, ``client.models.generate_content``), records the keyword arguments
it was called with, and answers a recorded response in the SDK's style (attribute access). A
``during_call`` hook runs inside the call, so a test can look at the ledger mid-call.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from tests.client import recorded


class _Recorder:
    def __init__(self, response: Any, fail: Exception | None, during_call: Callable | None) -> None:
        self.response = response
        self.fail = fail
        self.during_call = during_call
        self.calls: list[dict[str, Any]] = []

    def answer(self, kwargs: dict[str, Any]) -> Any:
        self.calls.append(kwargs)
        if self.during_call is not None:
            self.during_call()
        if self.fail is not None:
            raise self.fail
        return self.response


class FakeOpenAI(_Recorder):
    def __init__(
        self,
        response: dict = recorded.OPENAI_CHAT,
        fail: Exception | None = None,
        during_call: Callable | None = None,
    ) -> None:
        super().__init__(recorded.as_object(response), fail, during_call)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))
        self.responses = SimpleNamespace(create=self._create)

    def _create(self, **kwargs: Any) -> Any:
        return self.answer(kwargs)


class FakeAsyncOpenAI(FakeOpenAI):
    async def _acreate(self, **kwargs: Any) -> Any:
        return self.answer(kwargs)

    def __init__(self, response: dict = recorded.OPENAI_CHAT, **options: Any) -> None:
        super().__init__(response, **options)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._acreate))


class FakeAnthropic(_Recorder):
    def __init__(
        self,
        response: dict = recorded.ANTHROPIC_MESSAGE,
        fail: Exception | None = None,
        during_call: Callable | None = None,
    ) -> None:
        super().__init__(recorded.as_object(response), fail, during_call)
        self.messages = SimpleNamespace(create=lambda **kwargs: self.answer(kwargs))


class FakeGenAI(_Recorder):
    def __init__(
        self,
        response: dict = recorded.GEMINI_THINKING,
        fail: Exception | None = None,
        during_call: Callable | None = None,
    ) -> None:
        super().__init__(recorded.gemini_sdk(response), fail, during_call)
        self.models = SimpleNamespace(generate_content=lambda **kwargs: self.answer(kwargs))
