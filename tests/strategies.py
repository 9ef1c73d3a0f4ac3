"""Hypothesis strategies the tests of hostile input share."""

from __future__ import annotations

from hypothesis import strategies as st

# Every JSON value, with what JSON parsers trip on: integers past 64 bits, huge and
# non-finite floats, lone surrogates, control characters.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
