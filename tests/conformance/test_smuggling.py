"""The request-smuggling probes (probes.py): no probe desynchronises either engine's framing;
httptools refuses every ambiguous one (docs/HTTP.md has both engines' outcomes)."""
import pytest

from conformance.probes import DESYNC, PROBES, REJECT, outcome

# Where pywsgi serves an ambiguous message instead of refusing it (it never desynchronises).
PYWSGI_SERVES = {"CL.TE", "TE.CL", "TE.TE tab value", "TE.TE two fields", "TE.TE obs-fold name", "TE.TE bare LF",
                 "TE.TE bare CR", "TE.TE identity, chunked", "TE.TE upper case", "TE.TE vertical tab",
                 "TE.TE NUL", "TE in HTTP/1.0", "CL.CL differ", "CL.CL same", "TE.TE space before colon",
                 "TE.TE folded colon", "TE.TE chunked, identity", "TE.TE quoted", "TE.TE xchunked",
                 "CL space before colon"}


@pytest.mark.parametrize("name,data,safe", [(p[0], p[2], p[3]) for p in PROBES], ids=[p[0] for p in PROBES])
def test_probe_is_refused_or_framed_one_safe_way(served, pywsgi_gap, name, data, safe):
    if name in PYWSGI_SERVES:
        pywsgi_gap("serves the ambiguous message instead of refusing it")
    elif name == "CL plus sign":
        pywsgi_gap("reads Content-Length: +0 as 0 and serves the body as a second request (desynchronised)")
    seen = outcome(served.port, data)
    assert seen != DESYNC
    assert seen.startswith(safe), seen
    if safe == REJECT:
        assert seen.endswith("closed)"), seen
