"""The test suite's shared ground.

    tests/unit/          sans-I/O decisions and codecs: no sockets, no event loop needed
    tests/integration/   real sockets on 127.0.0.1 (port 0): the reference server, the
                         chaos proxy, hypercorn, werkzeug, scripted hostile servers, the CLI
    tests/support/       what several test modules share (servers written for tests);
                         importable as ``support`` because this file's folder is on the path

The ``reference_server``, ``chaos_proxy`` and ``make_chaos_proxy`` fixtures come from the
package's own pytest plugin (``resilient_stream.pytest_plugin``), as for any user.
"""
