"""The offline dashboard: one static HTML page of runs, datasets, registry, sweeps and monitoring.

For users without the W&B UI (or before ``wandb sync``): everything is read from the local
store, so the page shows exactly what the suite recorded. Images (confusion matrices, sweep
plots) are embedded, so the file can be mailed or archived on its own. The sections are in
:mod:`src.reporting.sections`, the building blocks in :mod:`src.reporting.markup`.

    python src/report.py --out report.html [--store DIR]   (the command line; this module builds the page)
"""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path
from typing import Callable

from src.core.cli import WRITE_ERRNOS, write_failure
from src.core.errors import ConfigError
from src.core.paths import write_text_atomic
from src.reporting.markup import CSS, when
from src.reporting.sections import (
    datasets_section,
    monitoring_section,
    registry_section,
    runs_section,
    sweeps_section,
)

log = logging.getLogger(__name__)

SECTIONS: dict[str, Callable] = {"Training runs": runs_section, "Dataset versions": datasets_section,
                                 "Model registry": registry_section, "Sweeps": sweeps_section,
                                 "Monitoring": monitoring_section}


def section_id(title: str) -> str:
    return title.lower().replace(" ", "-")


def build_report(out: str | Path = "report.html", store=None) -> Path:
    """Write the dashboard; a section that cannot be read says why instead of failing the page."""
    from src.core.store import Store

    st = Store.of(store)
    nav = " · ".join(f'<a href="#{section_id(t)}">{html.escape(t)}</a>' for t in SECTIONS)
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>grocery-mlops report</title>"
             f"<link rel=icon href=\"data:,\"><style>{CSS}</style>",
             f"<h1>grocery-mlops report</h1><p class=muted>store {html.escape(str(st.root))}, generated "
             f"{when(time.time())}</p><nav>{nav}</nav>"]
    for title, section in SECTIONS.items():
        try:
            body = section(st)
        except Exception as e:  # noqa: BLE001 - one unreadable section must not hide the others
            log.warning("report section %s failed: %s", title, e)
            body = f"<p class=bad>could not read this section: {html.escape(str(e))}</p>"
        parts.append(f"<section id={section_id(title)}><h2>{html.escape(title)}</h2>\n{body}</section>")
    out = Path(out)
    try:  # beside the page and renamed into place: a failed write leaves the previous page whole
        write_text_atomic(out, "\n".join(parts) + "\n</html>")
    except OSError as e:
        if e.errno in WRITE_ERRNOS:  # a full disk, a quota, a read-only file system: exit 4, as everywhere
            raise write_failure(OSError(e.errno, e.strerror, str(out))) from e
        raise ConfigError(f"cannot write the report to {out}: {e.strerror or e}",
                          hint="`out` must be a writable path", params=("out",)) from e
    return out
