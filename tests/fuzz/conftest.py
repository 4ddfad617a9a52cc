"""The fuzz suite's hypothesis profile: every entrance gets garbage and must answer with a clean error or a valid
result. Derandomized, so a run in CI tries the same inputs as a run here; no deadline, as the machine may be busy."""
from hypothesis import HealthCheck, settings

settings.register_profile("w0sim-fuzz", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("w0sim-fuzz")
