"""``e2e.ports.free_port``: the port every test-started component listens on."""

import socket

from e2e.ports import ephemeral_port_range, free_port


def test_a_free_port_is_outside_the_kernels_ephemeral_range_and_binds():
    # the kernel hands out its ephemeral range for every outgoing connection's source port, so a
    # port picked there can be taken before the component binds it (kube-apiserver's "bind:
    # address already in use" in a CI run); a connection's own source port shows the range
    low, high = ephemeral_port_range()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            assert low <= client.getsockname()[1] <= high
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
