"""Communication templates: the seed's content per audience, rendered for Slack, the webhook and email, and
replaceable by files of the user's own."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from k8s_runbooks.communicate import AUDIENCES, StatusUpdate, render
from k8s_runbooks.errors import ConfigError

UPDATE = StatusUpdate(kind="mitigated", target="shop/checkout", summary="rolled back <bad> & co", impact="3 of 3 pods crash-looping",
                      actions=["roll back shop/deployment/checkout (allowed, executed)"], findings=["Error exit 1 (checkout-abc)"],
                      run_url="http://prefect/runs/1", runbook="pod-crash", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))


@pytest.mark.parametrize("fmt", ["slack", "webhook", "email"])
def test_responders_and_stakeholders_carry_what_impact_actions_next(fmt: str) -> None:
    for audience in ("responders", "stakeholders"):
        text = render(audience, fmt, UPDATE).text  # type: ignore[arg-type]
        for part in ("Incident mitigated", "3 of 3 pods crash-looping", "roll back shop/deployment/checkout",
                     "Next steps", "root-cause work continues", "2026-01-02 03:04:05"):
            assert part in text, (audience, fmt, part, text)
    responders = render("responders", fmt, UPDATE).text
    assert "Error exit 1 (checkout-abc)" in responders  # evidence for responders ...
    assert "Error exit 1" not in render("stakeholders", fmt, UPDATE).text  # ... not for stakeholders


def test_formats_differ_as_their_channels_need() -> None:
    slack = render("responders", "slack", UPDATE).text
    assert "rolled back &lt;bad&gt; &amp; co" in slack and "<http://prefect/runs/1|open in Prefect>" in slack and "*Impact*" in slack
    email = render("responders", "email", UPDATE)
    assert "rolled back <bad> & co" in email.text and "*" not in email.text and "open in Prefect: http://prefect/runs/1" in email.text
    assert email.subject == "[MITIGATED] shop/checkout: rolled back <bad> & co"
    assert "*Impact*" in render("stakeholders", "webhook", UPDATE).text


def test_the_status_page_speaks_to_customers_only() -> None:
    page = render("status_page", "email", UPDATE)
    assert page.subject == "checkout: Monitoring" and "contained" in page.text
    for internal in ("shop/", "pod", "prefect", "roll back"):
        assert internal not in page.text.lower(), internal


def test_a_file_in_the_templates_dir_replaces_the_packaged_one(tmp_path: Path) -> None:
    (tmp_path / "stakeholders.j2").write_text("{% block subject %}Ops: {{ target }}{% endblock %}"
                                             "{% block body %}{{ b(kind_word) }} {{ service_name }}: {{ summary }}{% endblock %}")
    got = render("stakeholders", "webhook", UPDATE, tmp_path)
    assert got.subject == "Ops: shop/checkout" and got.text == "*MITIGATED* checkout: rolled back <bad> & co\n"
    assert "Incident mitigated" in render("responders", "webhook", UPDATE, tmp_path).text  # others stay packaged


@pytest.mark.parametrize("source", ["{{ no_such_variable }}", "{% block body %}{{ summary.__class__.__mro__ }}{% endblock %}",
                                    "{% if %}"])
def test_a_broken_or_unsafe_template_fails_naming_the_file(tmp_path: Path, source: str) -> None:
    (tmp_path / "responders.j2").write_text(source)
    with pytest.raises(ConfigError, match="responders.j2"):
        render("responders", "slack", UPDATE, tmp_path)


def test_every_audience_has_a_packaged_template() -> None:
    for audience in AUDIENCES:
        assert render(audience, "webhook", StatusUpdate(kind="opened", target="a/b", summary="s")).text.strip()


def test_a_broken_user_template_falls_back_to_the_packaged_one_for_updates(tmp_path: Path) -> None:
    from k8s_runbooks.communicate import render_safely, render_status_update

    (tmp_path / "stakeholders.j2").write_text("{{ broken")
    assert "Incident mitigated" in render_status_update(UPDATE, tmp_path)
    assert render_safely("stakeholders", "email", UPDATE, tmp_path).subject == "[MITIGATED] shop/checkout: rolled back <bad> & co"
