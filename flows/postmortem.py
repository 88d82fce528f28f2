"""The post-mortem flow: assemble a run's post-mortem from Prefect, render it, store it.

Output: a markdown artifact `postmortem` on the post-mortem run and files
`<reports_dir>/<flow_run_id>/postmortem.md` and `.html`. `build_postmortem` does the same without a
flow run (CLI: `k8s-runbooks postmortem FLOW_RUN_ID [-o FILE]`), so any past run can be rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.artifacts import artifact_key, publish_raw_markdown
from k8s_runbooks.errors import ConfigError
from k8s_runbooks_prefect.postmortem.assemble import assemble
from k8s_runbooks.postmortem.model import PostMortem
from k8s_runbooks.postmortem.render import render_html, render_markdown
from k8s_runbooks.settings import get_settings


async def _assemble(flow_run_id: str) -> PostMortem:
    async with get_client() as client:
        return await assemble(flow_run_id, client, state_dir=get_settings().state_dir)


def write_postmortem(pm: PostMortem, output: Path | None = None) -> tuple[Path, str]:
    """Write Markdown (and HTML beside it); returns the Markdown path and text."""
    path = output if output is not None else get_settings().reports_dir / pm.flow_run_id / "postmortem.md"
    markdown = render_markdown(pm, base_dir=path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown, encoding="utf-8")
        path.with_suffix(".html").write_text(render_html(pm), encoding="utf-8")  # charts inlined: one self-contained file
    except OSError as exc:
        raise ConfigError(f"cannot write the post-mortem to {path}: {exc.strerror}", hint="check K8S_RUNBOOKS_REPORTS_DIR or -o") from None
    return path, markdown


def build_postmortem(flow_run_id: str, output: Path | None = None) -> Path:
    """Rebuild the post-mortem of any run from the Prefect API; returns the Markdown file's path."""
    pm = run_coro_as_sync(_assemble(flow_run_id))
    assert pm is not None
    path, _ = write_postmortem(pm, output)
    return path


@flow(name="postmortem", log_prints=True)
def postmortem_flow(run_id: str) -> str:
    pm = run_coro_as_sync(_assemble(run_id))
    assert pm is not None
    path, markdown = write_postmortem(pm)
    publish_raw_markdown(artifact_key("postmortem"), markdown, f"Post-mortem of flow run {run_id}")
    print(f"post-mortem written to {path}")
    return str(path)
