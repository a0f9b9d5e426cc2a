"""Users' own files: Jinja2 templates named by a target (local files only).

Templates run in Jinja2's sandbox, with ``StrictUndefined``: a key the configuration
does not have is an error that names it, never an empty string.  They see
``values`` (the machine's effective values by feature), ``hostname`` and ``options``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusterd.services.render import Rendered, RenderError


def render_templates(
    templates: Mapping[str, Path],
    values: Mapping[str, Any],
    hostname: str,
    options: Mapping[str, Any],
) -> Rendered:
    import jinja2  # (only a machine with a template target loads it)
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                               autoescape=False)  # fmt: skip
    files = {}
    for name, path in templates.items():
        try:
            source = Path(path).read_text(encoding="utf-8")
            files[name] = env.from_string(source).render(
                values=dict(values), hostname=hostname, options=dict(options)
            )
        except OSError as exc:
            raise RenderError(f"template {path}: {exc.strerror or exc}") from None
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f" line {line}" if line else ""
            raise RenderError(f"template {path}{where}: {exc.message or exc}") from None
    return Rendered(files)
