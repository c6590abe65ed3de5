"""Integration-test harness for davsyncd.

- davtest.servers: real Radicale and Xandikos servers on free loopback ports,
  with helpers to create collections and items over HTTP.
- davtest.sampledata: deterministic iCalendar events/todos and vCards, and
  seed_demo() for the demo.
- davtest.daemon: writing davsyncd configs, running the binary with private
  XDG folders, and wait_until() for polling with a deadline.

Everything runs under /usr/bin/python3 (Debian's interpreter, which has
python3-requests and python3-pytest).
"""
