"""The request-smuggling probes (probes.py): no probe desynchronises either engine's framing;
httptools refuses every ambiguous one (docs/HTTP.md has both engines' outcomes)."""
import pytest

from conformance.probes import DESYNC, PROBES, REJECT, outcome

# Where pywsgi serves an ambiguous message instead of refusing it (it never desynchronises).
PYWSGI_SERVES = {"TE.TE obs-fold name", "TE in HTTP/1.0", "CL.CL same", "TE.TE space before colon",
                 "TE.TE folded colon", "CL space before colon"}


@pytest.mark.parametrize("name,data,safe", [(p[0], p[2], p[3]) for p in PROBES], ids=[p[0] for p in PROBES])
def test_probe_is_refused_or_framed_one_safe_way(served, pywsgi_gap, name, data, safe):
    if name in PYWSGI_SERVES:
        pywsgi_gap("serves the ambiguous message instead of refusing it")
    seen = outcome(served.port, data)
    assert seen != DESYNC
    assert seen.startswith(safe), seen
    if safe == REJECT:
        assert seen.endswith("closed)"), seen
