"""Shared test settings: no model hub, and the `slow` marker."""

import os

# Hub ids must fail at once instead of retrying the network (ENVIRONMENT notes: ~46 s).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: loads the built-in pretrained model smollm2-135m (about 10 s); "
        "part of the normal run, deselect with -m 'not slow'",
    )
