import pytest
from hypothesis import HealthCheck, settings

# Speed is never what a property test asserts: a loaded machine can stall one example
# past Hypothesis's default 200 ms deadline (then reported as "Unreliable test timings",
# a failure) or slow the generation of data past the too_slow health check. Tests that
# give their own settings inherit these where they do not say otherwise.
#
# The suite tests the same examples on every run (derandomize: seeded from each test),
# so a run of CI can never fail on an example no earlier run tried. To search for new
# counterexamples, run the property tests with `--hypothesis-profile explore`.
settings.register_profile(
    "bacalhau-tests",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "explore", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=1000
)
settings.load_profile("bacalhau-tests")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
