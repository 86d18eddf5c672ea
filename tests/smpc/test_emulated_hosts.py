"""EmulatedHosts' argument checks: they run before any namespace is made (no root needed here;
the hosts themselves are exercised by tests/smpc/test_across_hosts.py)."""

import numpy as np
import pytest

from course_lib.smpc.emulated_hosts import EmulatedHosts


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
def test_bools_are_refused(flag):
    with pytest.raises(TypeError, match="n_hosts"):
        EmulatedHosts(flag)
    with pytest.raises(TypeError, match="delay_ms"):
        EmulatedHosts(3, delay_ms=flag)


def test_out_of_range_values_are_refused():
    with pytest.raises(ValueError, match="n_hosts"):
        EmulatedHosts(1)
    with pytest.raises(ValueError, match="n_hosts"):
        EmulatedHosts(251)
    with pytest.raises(ValueError, match="delay_ms"):
        EmulatedHosts(3, delay_ms=-1)
    with pytest.raises(TypeError, match="n_hosts"):
        EmulatedHosts(3.0)


def test_numpy_numbers_are_taken():
    hosts = EmulatedHosts(np.int64(3), delay_ms=np.float32(2.5), subnet="10.9.0")
    assert hosts.addresses == ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    assert len(hosts.names) == 3 and hosts.delay_ms == 2.5 and type(hosts.delay_ms) is float
    assert hosts.processes == [] and hosts._created == []  # nothing made until `with`
