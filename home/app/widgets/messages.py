"""The conversation as widgets: user messages, streamed assistant replies, small system lines.

Assistant replies are Markdown fed through Textual's `MarkdownStream`, which appends parsed blocks
instead of re-rendering the whole reply each piece: no flicker, and bursts are coalesced for us.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream


class UserMessage(Static):
    """What the user sent, as typed (no Markdown: their text is shown exactly)."""

    def __init__(self, who: str, text: str) -> None:
        super().__init__(text, markup=False)
        self.border_title = who
        self.text = text  # what ctrl+y copies


class SystemLine(Static):
    """A one-line note in the flow of the chat: persona switches, new sessions, errors."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False)


class AssistantMessage(Vertical):
    """One reply; `append` is called with batched pieces while the worker generates."""

    def __init__(self, who: str, text: str = "") -> None:
        super().__init__()
        self.border_title = who
        self.text = text  # everything received so far: tests and `finish` read it
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Markdown(self.text)

    async def append(self, piece: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        self.text += piece
        await self._stream.write(piece)

    async def finish(self, stopped: bool = False, error: str | None = None) -> None:
        """Flush the stream and label how the reply ended."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if stopped:
            self.border_subtitle = "(stopped)"
            self.add_class("-stopped")
        if error:
            self.border_subtitle = error
            self.add_class("-error")


KEEP = 200  # messages on screen: each reply is a Markdown tree (~13 ms to mount); a resume of 800 took 9 s
TRIM_EVERY = 50  # trimmed in batches past KEEP, not one widget per message


class MessageList(VerticalScroll):
    """Scrolls with the newest message while the user is at the bottom (anchor). A click on a message
    selects it (a click on it again unselects) so that the copy key takes that one, not the last reply.

    Holds the latest `keep` messages of a session that goes on for days: older ones leave the screen (the log
    and the model's history keep them) and a line at the top says how many and where they are."""

    @dataclass
    class Selected(Message):
        """A click selected `message` (None: the selection was cleared by a click)."""

        message: UserMessage | AssistantMessage | None

    _selected: UserMessage | AssistantMessage | None = None

    def on_mount(self) -> None:
        self.anchor()

    @property
    def selected(self) -> UserMessage | AssistantMessage | None:
        """The selected message, if it is still on screen (regenerate or a new chat remove messages)."""
        return self._selected if self._selected is not None and self._selected.is_attached else None

    def on_click(self, event: events.Click) -> None:
        hit = next((w for w in event.widget.ancestors_with_self if isinstance(w, UserMessage | AssistantMessage)),
                   None) if event.widget is not None else None
        if hit is not None:
            self.select(None if hit is self.selected else hit)
            self.post_message(self.Selected(self.selected))

    def select(self, message: UserMessage | AssistantMessage | None) -> None:
        if self._selected is not None:
            self._selected.remove_class("-selected")
        self._selected = message
        if message is not None:
            message.add_class("-selected")

    hidden = 0  # messages of this session no longer on screen
    keep, trim_every = KEEP, TRIM_EVERY

    async def add(self, widget: Static | AssistantMessage) -> None:
        await self.mount(widget)
        await self._trim()
        self.scroll_end(animate=False)

    async def clear(self) -> None:
        self.hidden = 0
        await self.remove_children()

    async def not_shown(self, n: int) -> None:
        """`n` earlier messages of a resumed session left off the screen (only the latest `keep` are shown)."""
        self.hidden += n
        await self._say_hidden()

    async def _trim(self) -> None:
        shown = [w for w in self.children if isinstance(w, Static | AssistantMessage) and w.id != "earlier"]
        if len(shown) <= self.keep + self.trim_every:
            return
        old = shown[: len(shown) - self.keep]
        self.hidden += sum(isinstance(w, UserMessage | AssistantMessage) for w in old)
        await self.remove_children(old)
        await self._say_hidden()

    async def _say_hidden(self) -> None:
        if not self.hidden:
            return
        n = self.hidden
        text = (f"— {n:,} earlier message{'s are' if n != 1 else ' is'} not shown here (the log keeps every one; "
                "ctrl+p → Export session as Markdown) —")
        note = self.query("#earlier")
        if note:
            note.first(SystemLine).update(text)
        else:
            line = SystemLine(text)
            line.id = "earlier"
            await self.mount(line, before=0 if self.children else None)

    @property
    def last_reply(self) -> AssistantMessage | None:
        replies = self.query(AssistantMessage)
        return replies.last() if replies else None
