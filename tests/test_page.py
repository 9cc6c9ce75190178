"""The chat page in a real headless Chromium against the served app on the offline stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.service import create_app
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.support.served import stand_in_config

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
QUESTION = "Where is the muster point when the fire alarm sounds?"
STREAMING_NOW = """() => {
  const text = document.querySelector('.msg.assistant.streaming .text');
  return text && text.textContent.length > 0 && !window.chatEvents.some(e => e.event === 'done');
}"""


@pytest.mark.slow
def test_page_streams_the_answer_shows_sources_and_keeps_the_chat_across_reloads(
    browser, stand_in, served_qdrant, tmp_path
):
    url = stand_in[0]
    app = create_app(
        stand_in_config(url),
        qdrant=served_qdrant,
        history=HistoryStore(tmp_path / "h.sqlite"),
        options={"num_predict": 60},
    )
    app.state.service.k = 3
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(app) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(server.url + "/")
        chat_id = page.text_content("#chat-id")
        assert chat_id and page.evaluate("localStorage.getItem('chatId')") == chat_id
        page.fill("#question", QUESTION)
        page.click("#send")
        page.wait_for_function(STREAMING_NOW, timeout=600_000)  # text on screen while the stream is still open
        page.wait_for_function("window.chatEvents.some(e => e.event === 'done')", timeout=600_000)
        events = page.evaluate("window.chatEvents")
        names = [e["event"] for e in events]
        assert names[0] == "token" and names[-2:] == ["sources", "done"] and set(names[:-2]) == {"token"}
        assert events[0]["shown"] > 0 and events[0]["t"] < events[-1]["t"]
        assert page.locator("#sources li[data-chunk-id]").count() == 3
        assert "score" in page.text_content("#sources") and "tokens" in page.text_content("#status")
        answer = page.text_content(".msg.assistant .text")
        assert answer.strip() and page.locator(".msg.failed").count() == 0
        shot = ARTIFACTS / "page-chat.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        page.reload()  # the chat id comes back from localStorage, the conversation from GET /chats/{id}
        page.wait_for_selector(".msg.assistant")
        assert page.text_content("#chat-id") == chat_id
        assert page.locator(".msg.user .text").all_text_contents() == [QUESTION]
        assert page.locator(".msg.assistant .text").all_text_contents() == [answer.strip()]
        page.screenshot(path=str(ARTIFACTS / "page-reloaded.png"), full_page=True)

        page.click("#new-chat")
        new_id = page.text_content("#chat-id")
        assert new_id != chat_id and page.locator(".msg").count() == 0
        page.reload()
        page.wait_for_function("document.querySelector('#status').textContent === 'new chat'")
        assert page.text_content("#chat-id") == new_id and page.locator(".msg").count() == 0
        page.close()
