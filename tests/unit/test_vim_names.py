"""VIM-side VM names: one per (tenant, deployment, VM), within the driver's rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esc.services.vim_wiring import vim_name
from esc.vim.driver import NAME_RE

PART = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
               max_size=30) | st.sampled_from(["a", "b", "a.b", "b.c", "a b", "a-b", "c", "x" * 30,
                                                "a.b.c", "v"])


def test_plain_names_are_readable_and_lookalikes_differ() -> None:
    assert vim_name("t1", "dep1", "vm_1") == "t1.dep1.vm_1"
    assert vim_name("t", "a b", "v") != vim_name("t", "a-b", "v")
    assert vim_name("a.b", "c", "v") != vim_name("a", "b.c", "v")
    assert vim_name("a", "b.c", "v").endswith("a-b-c-v")  # still readable at the end
    # a plain name shaped like a hashed one is still another name
    hashed = vim_name("a b", "c", "v")
    assert vim_name(*hashed.rsplit("-", 2)[0:1], "c", "v") != hashed


@given(PART, PART, PART, PART, PART, PART)
def test_different_parts_never_share_a_name(t1, d1, v1, t2, d2, v2) -> None:  # type: ignore[no-untyped-def]
    a, b = vim_name(t1, d1, v1), vim_name(t2, d2, v2)
    assert NAME_RE.fullmatch(a) and len(a) <= 63
    if (t1, d1, v1) != (t2, d2, v2):
        assert a != b
