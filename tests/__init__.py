import pytest

# The helpers in tests/support assert (a 201, a free slot): pytest shows their failures in
# detail, as they did in the conftest they came from, only if it rewrites them too.
pytest.register_assert_rewrite("tests.support")
