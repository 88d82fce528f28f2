"""Markup injection into the post-mortem: every text that comes from the incident (alert labels, log lines,
event messages, Sentry titles, approver comments) is hostile. Rendered to Markdown and then HTML, it may
add no element and no attribute: the HTML's element/attribute sequence (read with html.parser) must be
the one the same post-mortem has with harmless texts, and each text must show up literally."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from k8s_runbooks.models import TimelineEntry
from k8s_runbooks.postmortem.model import ChartRef, EvidenceItem, PostMortem
from k8s_runbooks.postmortem.render import render_html, render_markdown
from tests.reliability.conftest import TALLY, fuzz_settings
from tests.reliability.strategies import HOSTILE

MARKUP = st.sampled_from([
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[click](javascript:alert(1))", "![x](http://evil/x.png)",
    "<http://evil.example>", "http://evil.example", "*bold* _em_ `code`", "# heading", "1. item", "- item", "+ item", "* item",
    "---", "===", "> quote", "| a | b |", "    indented code", "```\nfence\n```", "~~~\nfence", "&lt;b&gt;", "&amp;", "&#60;script&#62;",
    "a  \nb", "trailing backslash\\", "<!-- comment -->", "<div onclick=x>", "[ref]: http://evil", "[x][ref]", "\\*not em\\*",
    "2) item", "- - nested", "<a href='x'>a</a>", "***", "___", "=", "-", "1.", "| --- |", "[^1]", "<details open>", "\x00", "\u2028",
])
TEXT = st.one_of(MARKUP, HOSTILE, st.text(max_size=40),
                 st.lists(st.one_of(MARKUP, st.text(alphabet="<>[]()!*_`#|-+=.1&;\\ \n~:/\"'", max_size=8)), max_size=4).map("".join))


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.tags.append(("<!--", ()))


def _structure(html: str) -> tuple[list[Any], str]:
    parser = _Structure()
    parser.feed(html)
    parser.close()
    return parser.tags, " ".join("".join(parser.text).split())


def _postmortem(t: list[str]) -> PostMortem:
    at = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    return PostMortem(
        title=t[0], flow_run_id="3f0c0b5e-0000-4000-8000-000000000000", flow_run_name=t[1], flow_run_url="http://prefect/runs/1",
        final_state=t[2], date=at, duration=timedelta(minutes=3), impact=t[3], summary=t[4],
        timeline=[TimelineEntry(at=at, event=t[5], detail=t[6], kind="step"), TimelineEntry(at=at, event=t[7], detail=t[8], kind="approval")],
        root_cause=[t[9], t[10]], actions_taken=[t[11]], lessons_learned=[t[12]], action_items=[t[13], t[14]],
        evidence=[EvidenceItem(title=t[15], kind="log", content=t[16], step=t[17]), EvidenceItem(title=t[18], kind="events", content=t[19])],
        charts=[ChartRef(title=t[20], path=f"/nonexistent/{t[21]}.png")], drill=True,
    )


N_TEXTS = 22
INLINE = [i for i in range(N_TEXTS) if i not in (16, 19, 21)]  # 16, 19: code blocks; 21: inside a path


def _harmless(text: str, i: int) -> str:
    # Same emptiness as the hostile text: an empty summary legitimately renders no paragraph.
    if i in (16, 19):
        return "harmless"
    return f"harmless{i}" if " ".join(text.split()) else text if not text.strip() else ""


@fuzz_settings(0.03)
@given(texts=st.lists(TEXT, min_size=N_TEXTS, max_size=N_TEXTS))
@example(texts=["1. item"] * N_TEXTS)
@example(texts=["- - nested"] * N_TEXTS)
@example(texts=["&lt;script&gt;"] * N_TEXTS)
@example(texts=["---"] * N_TEXTS)
@example(texts=["a" * 5000] * N_TEXTS)  # a chart path over PATH_MAX (ENAMETOOLONG): "missing", not a crash
def test_no_markup_from_incident_text(texts: list[str]) -> None:
    pm = _postmortem(texts)
    harmless = _postmortem([_harmless(t, i) for i, t in enumerate(texts)])
    tags, text = _structure(render_html(pm, render_markdown(pm)))
    expected, _ = _structure(render_html(harmless, render_markdown(harmless)))
    assert tags == expected, "the incident's text changed the HTML structure"
    for i in INLINE:
        shown = _shown(texts[i])
        assert shown in text, f"text {i} {texts[i]!r} not shown literally"
    for i in (16, 19):  # code blocks keep the text as is (up to surrounding whitespace)
        block = _shown(texts[i], collapse=False).strip().replace("\r\n", "\n").replace("\r", "\n")
        assert block in "".join(_Structure_text(render_html(pm, render_markdown(pm))))
    TALLY["injection post-mortem html"] += 1


def _shown(text: str, collapse: bool = True) -> str:
    """How a text must read in the HTML: CommonMark replaces NUL with U+FFFD (on purpose, for safety)."""
    text = text.replace("\x00", "\ufffd")
    return " ".join(text.split()) if collapse else text


def _Structure_text(html: str) -> list[str]:  # noqa: N802 - reads like the class it wraps
    parser = _Structure()
    parser.feed(html)
    return parser.text
