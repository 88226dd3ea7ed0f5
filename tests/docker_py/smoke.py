"""docker-py 7.2 against `wrun daemon` (run by tests/all/daemon.rs with
DOCKER_HOST set to the daemon's socket): the calls its users make most."""

import time

import docker

client = docker.from_env()
assert client.ping()
assert client.version()["ApiVersion"] == "1.47"

# Not detached: docker-py creates, starts, follows the logs, waits.
out = client.containers.run("hello", remove=True)
assert b"Hello from a wrun guest!" in out, out

# A failing container raises with its exit status and stderr.
try:
    client.containers.run("trap", remove=True)
    raise AssertionError("a trapping container must raise ContainerError")
except docker.errors.ContainerError as e:
    assert e.exit_status == 134, e
    assert b"trapped" in e.stderr, e.stderr

# Detached, listed with filters, logs, stop, wait, remove.
spin = client.containers.run("spin", detach=True, name="pyspin", labels={"suite": "smoke"})
spin.reload()
assert spin.status == "running", spin.status
deadline = time.time() + 60
while b"spinning" not in spin.logs():
    assert time.time() < deadline, spin.logs()
    time.sleep(0.05)
running = client.containers.list(filters={"label": "suite=smoke", "status": "running"})
assert [c.name for c in running] == ["pyspin"], running
spin.stop()
assert spin.wait()["StatusCode"] == 143
spin.remove()
assert client.containers.list(all=True, filters={"name": "pyspin"}) == []

# Images, by tag and by id.
tags = [t for image in client.images.list() for t in image.tags]
assert "hello:latest" in tags, tags

# What is not there is a NotFound, naming it.
try:
    client.containers.get("nothing-here")
    raise AssertionError("a missing container must raise")
except docker.errors.NotFound as e:
    assert "No such container: nothing-here" in str(e), e

print("docker-py: all passed")
